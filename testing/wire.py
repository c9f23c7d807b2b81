"""What actually crosses the wire: a tiny raw-socket capture for tests (run as root inside a
pod's network namespace). It records TCP payloads to or from one port on one interface and
says whether a plaintext marker appeared and how many segments began with a TLS record.
Listen on the pod's own interface, not on all of them: a sidecar hands decrypted traffic to
the app over loopback.

    python -m pilotfish.testing.wire --interface eth0 --port 8080 --seconds 3 --marker /wire-check
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import socket
import struct
import sys
import time
from collections.abc import Collection

ETH_P_ALL = 0x0003
# A TLS record header: content type (handshake 0x16, application data 0x17), version 3.x.
TLS_HANDSHAKE_START, TLS_DATA_START = b"\x16\x03", b"\x17\x03"


def tcp_payload(frame: bytes) -> tuple[int, int, bytes] | None:
    """(source port, destination port, payload) of an Ethernet/IPv4/TCP frame."""
    if len(frame) < 14 or struct.unpack("!H", frame[12:14])[0] != 0x0800:
        return None
    ip = frame[14:]
    if len(ip) < 20 or ip[9] != 6:  # not TCP
        return None
    ip_header = (ip[0] & 0x0F) * 4
    total = struct.unpack("!H", ip[2:4])[0]
    tcp = ip[ip_header:total]
    if len(tcp) < 20:
        return None
    source, destination = struct.unpack("!HH", tcp[:4])
    return source, destination, tcp[(tcp[12] >> 4) * 4:]


def addresses(frame: bytes) -> tuple[str, str]:
    """(source, destination) IPv4 addresses of an Ethernet/IPv4 frame."""
    return (str(ipaddress.IPv4Address(frame[26:30])), str(ipaddress.IPv4Address(frame[30:34])))


def capture(interface: str, port: int, seconds: float, marker: bytes,
            between: Collection[str] = ()) -> dict[str, object]:
    """``between``: count only segments whose two ends are both among these addresses
    (other traffic to the same port, a node's probe say, is not the pair's)."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((interface, 0))
    sock.settimeout(0.2)
    deadline = time.monotonic() + seconds
    packets = payload_bytes = tls_records = 0
    marker_seen = False
    while time.monotonic() < deadline:
        try:
            frame = sock.recv(65535)
        except TimeoutError:
            continue
        parsed = tcp_payload(frame)
        if parsed is None or port not in parsed[:2] or not parsed[2]:
            continue
        if between and not set(addresses(frame)) <= set(between):
            continue
        payload = parsed[2]
        packets += 1
        payload_bytes += len(payload)
        marker_seen = marker_seen or marker in payload
        if payload[:2] in (TLS_HANDSHAKE_START, TLS_DATA_START):
            tls_records += 1
    return {"packets": packets, "payload_bytes": payload_bytes, "marker": marker_seen,
            "tls_records": tls_records}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--interface", default="eth0")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--marker", required=True, help="plaintext to look for")
    args = parser.parse_args()
    print("capturing", flush=True)
    seen = capture(args.interface, args.port, args.seconds, args.marker.encode())
    print(json.dumps(seen), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
