"""echo-basic's TCP mode (``TCP_ECHO_SERVER``): the suite's line protocol.

On connect the server says ``Gateway API Test TCP Server``; then ``TEST`` answers the
pod's context as JSON (with ``isTLS`` and, over TLS, the handshake), ``IS_TLS`` answers
``true``/``false``, ``PING`` answers ``PONG``. Plain on ``TCP_PORT`` (3000), TLS on
``TLS_PORT`` (8443) with ``TLS_SERVER_CERT`` and ``TLS_SERVER_PRIV_KEY``;
``TCP_MODE=RESET`` resets every connection instead.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from functools import partial
from typing import Any

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.tls import TLSAttribute, TLSListener

from pilotfish.demo import echo_basic
from pilotfish.demo.echo_http import reset

WELCOME = b"Gateway API Test TCP Server\n"
MAX_LINE = 64 * 1024


def payload(env: Mapping[str, str], tls: Mapping[str, Any] | None) -> bytes:
    """The answer to TEST, as the Go server marshals it."""
    body: dict[str, Any] = {
        "namespace": env.get("NAMESPACE", ""), "ingress": env.get("INGRESS_NAME", ""),
        "service": env.get("SERVICE_NAME", ""), "pod": env.get("POD_NAME", ""),
        "tcpport": env.get("TCP_PORT") or "3000", "tlsport": env.get("TLS_PORT") or "8443",
        "isTLS": tls is not None,
    }
    if tls is not None:
        body["tls"] = dict(tls)
    return json.dumps(body, separators=(",", ":")).encode()


def reply(line: bytes, test_payload: bytes, is_tls: bool) -> bytes:
    """The answer to one line ("" for a line the server ignores)."""
    if line == b"TEST":
        return test_payload + b"\n"
    if line == b"IS_TLS":
        return b"true\n" if is_tls else b"false\n"
    if line == b"PING":
        return b"PONG\n"
    return b""


def _tls(stream: anyio.abc.ByteStream) -> dict[str, Any] | None:
    ssl_object = stream.extra(TLSAttribute.ssl_object, None)
    if ssl_object is None:
        return None
    # Go's tls.VersionName: "TLS 1.3".
    version = (ssl_object.version() or "").replace("TLSv", "TLS ")
    out: dict[str, Any] = {"version": version,
                           "serverName": getattr(ssl_object, "_pilotfish_server_name", "")}
    if ssl_object.selected_alpn_protocol():
        out["negotiatedProtocol"] = ssl_object.selected_alpn_protocol()
    cipher = ssl_object.cipher()
    out["cipherSuite"] = echo_basic.go_cipher(cipher[0] if cipher else "")
    return out


async def connection(env: Mapping[str, str], stream: anyio.abc.ByteStream) -> None:
    async with stream:
        if env.get("TCP_MODE") == "RESET":
            reset(stream)
            return
        tls = _tls(stream)
        test_payload = payload(env, tls)
        buffered = BufferedByteReceiveStream(stream)
        try:
            await stream.send(WELCOME)
            while True:
                line = await buffered.receive_until(b"\n", MAX_LINE)
                out = reply(line.rstrip(b"\r"), test_payload, tls is not None)
                if out:
                    await stream.send(out)
        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.DelimiterNotFound,
                anyio.BrokenResourceError, ConnectionError, ssl.SSLError):
            return


async def serve(env: Mapping[str, str]) -> None:
    from pilotfish.demo.echo_http import tls_context

    cert, key = env.get("TLS_SERVER_CERT", ""), env.get("TLS_SERVER_PRIV_KEY", "")
    # Go's TCP server offers no ALPN.
    context = tls_context(cert, key, alpn=()) if cert and key else None
    async with anyio.create_task_group() as tg:
        plain = await anyio.create_tcp_listener(local_port=int(env.get("TCP_PORT") or 3000))
        tg.start_soon(plain.serve, partial(connection, env))
        if context is not None:
            secure = TLSListener(
                await anyio.create_tcp_listener(local_port=int(env.get("TLS_PORT") or 8443)),
                context, standard_compatible=False, handshake_timeout=10)
            tg.start_soon(secure.serve, partial(connection, env))
        print("Starting server (tcp)", flush=True)


def main(env: Mapping[str, str]) -> int:
    try:
        anyio.run(serve, env)
    except OSError as exc:
        print(f"Failed to start tcp server: {exc}", flush=True)
        return 1
    return 0
