"""Cutting an HTTP/2 connection's bytes into whole frames for the DATA fast path
(``core/native/h2_frames.py``): plain DATA frames come out on their own, everything else in
order as bytes for h2, however the reads cut the bytes; checked against frames h2 makes."""

from __future__ import annotations

import h2.config
import h2.connection

from pilotfish.core.native.h2_frames import (
    PREFACE_LENGTH,
    DataFrame,
    FrameSplitter,
    data_frame,
    data_header,
)


def client_bytes() -> bytes:
    """What an h2 client sends: preface, settings, a request, plain and flagged DATA."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    client.send_headers(1, [(":method", "CONNECT"), (":authority", "10.0.0.5:80")])
    client.send_data(1, b"first")
    client.send_data(1, b"padded", pad_length=3)
    client.send_data(1, b"second")
    client.send_data(1, b"last", end_stream=True)
    return client.data_to_send()


def items(splitter: FrameSplitter, wire: bytes, size: int) -> list[bytes | DataFrame]:
    out: list[bytes | DataFrame] = []
    for at in range(0, len(wire), size):
        out += splitter.feed(wire[at:at + size])
    return out


def merged(out: list[bytes | DataFrame]) -> list[bytes | DataFrame]:
    """Adjacent byte runs joined (how the reads cut them does not matter to h2)."""
    joined: list[bytes | DataFrame] = []
    for item in out:
        if isinstance(item, bytes) and joined and isinstance(joined[-1], bytes):
            joined[-1] += item
        elif item != b"":
            joined.append(item)
    return joined


def test_plain_data_frames_come_out_alone_and_the_rest_in_order_whatever_the_cuts():
    wire = client_bytes()
    whole = merged(items(FrameSplitter(server=True, max_frame=16384), wire, len(wire)))
    assert [type(item).__name__ for item in whole] == ["bytes", "DataFrame", "bytes",
                                                       "DataFrame", "bytes"]
    assert whole[1] == DataFrame(1, b"first") and whole[3] == DataFrame(1, b"second")
    assert whole[0][:PREFACE_LENGTH] == b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    for size in (1, 2, 5, 9, 10, 33):
        assert merged(items(FrameSplitter(True, 16384), wire, size)) == whole
    # put back together, the frames are the bytes that came
    rebuilt = b"".join(item if isinstance(item, bytes) else data_frame(item)
                       for item in whole)
    assert rebuilt == wire


def test_what_h2_takes_is_what_it_would_have_taken_whole():
    wire = client_bytes()
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    server.initiate_connection()
    events = []
    for item in FrameSplitter(True, 16384).feed(wire):
        events += server.receive_data(item if isinstance(item, bytes) else data_frame(item))
    names = [type(event).__name__ for event in events]
    assert names.count("DataReceived") == 4 and names[-1] == "StreamEnded"


def test_a_frame_past_the_largest_allowed_goes_to_h2_at_once_unbuffered():
    oversize = (1 << 20).to_bytes(3, "big") + bytes((0, 0)) + (1).to_bytes(4, "big")
    out = list(FrameSplitter(server=False, max_frame=16384).feed(oversize + b"x" * 10))
    assert out == [oversize + b"x" * 10]


def test_a_data_header_is_http2s():
    assert data_header(5, 3) == b"\x00\x00\x05\x00\x00\x00\x00\x00\x03"


def test_a_large_frame_read_in_pieces_comes_out_once_whole():
    payload = bytes(range(256)) * 4096  # 1 MiB, as bulk transfers send them
    splitter = FrameSplitter(server=False, max_frame=1 << 20)
    wire = data_header(len(payload), 3) + payload + data_header(2, 3) + b"ok"
    out = []
    for at in range(0, len(wire), 65536):
        got = splitter.feed(wire[at:at + 65536])
        assert got == [] or at + 65536 >= len(wire)  # nothing until the frame is whole
        out += got
    assert out == [DataFrame(3, payload), DataFrame(3, b"ok")]
    assert not splitter.buffer
