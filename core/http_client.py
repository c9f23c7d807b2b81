"""One HTTP/1.1 request over h11 and anyio: the agent's way to talk to local peers.

The agent asks the proxy's admin API for stats and scrapes the app's metrics endpoint,
both on this host, while it serves probes on the same event loop — so the client must
be async, bounded in time and size, and say which URL failed and how. A request may carry a
body and go over TLS (the test kit's Kubernetes API server calls admission webhooks so).
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

import anyio
import anyio.abc
import attrs
import h11

MAX_BODY = 256 * 1024 * 1024  # Envoy's full stats for a large mesh run to tens of MB


class HttpClientError(Exception):
    """The request failed before a response arrived; the message names the URL."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url, self.reason = url, reason


@attrs.frozen
class HttpReply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def split_url(url: str, scheme: str = "http") -> tuple[str, int, str]:
    """``http://host:port/path?q`` → (host, port, target), for a URL of ``scheme``."""
    parts = urlsplit(url)
    if parts.scheme != scheme or not parts.hostname:
        raise ValueError(f"{url!r}: expected an {scheme}://HOST[:PORT]/PATH URL")
    target = parts.path or "/"
    if parts.query:
        target += f"?{parts.query}"
    return parts.hostname, parts.port or (443 if scheme == "https" else 80), target


async def _connect(host: str, port: int, ssl_context: ssl.SSLContext | None,
                   server_name: str, unix_socket: str | None = None) -> anyio.abc.ByteStream:
    if unix_socket is not None:
        return await anyio.connect_unix(unix_socket)
    if ssl_context is None:
        return await anyio.connect_tcp(host, port)
    return await anyio.connect_tcp(host, port, ssl_context=ssl_context,
                                   tls_hostname=server_name, tls_standard_compatible=False)


async def request(url: str, method: str = "GET", *, timeout: float = 5.0,
                  headers: Sequence[tuple[str, str]] = (), body: bytes = b"",
                  ssl_context: ssl.SSLContext | None = None,
                  server_name: str | None = None, unix_socket: str | None = None
                  ) -> HttpReply:
    """Send one request with ``Connection: close`` and read the whole response. With
    ``ssl_context`` the URL is https and the server's certificate must name
    ``server_name`` (default: the URL's host). With ``unix_socket`` the request goes to the
    server on that socket (the URL's host is then only the Host header, as ``http://unix/``)."""
    host, port, target = split_url(url, "https" if ssl_context else "http")
    conn = h11.Connection(h11.CLIENT)
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    status, reply_headers, reply = 0, {}, bytearray()
    try:
        with anyio.fail_after(timeout):
            async with await _connect(host, port, ssl_context, server_name or host,
                                      unix_socket) as stream:
                await stream.send(conn.send(h11.Request(method=method, target=target, headers=[
                    ("Host", authority), ("Content-Length", str(len(body))),
                    ("Connection", "close"), *headers,
                ])) + ((conn.send(h11.Data(data=body)) or b"") if body else b"")
                    + (conn.send(h11.EndOfMessage()) or b""))
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        try:
                            conn.receive_data(await stream.receive(65536))
                        except (anyio.EndOfStream, anyio.BrokenResourceError):
                            conn.receive_data(b"")
                    elif isinstance(event, h11.Response):
                        status = event.status_code
                        reply_headers = {k.decode().lower(): v.decode("latin-1")
                                         for k, v in event.headers}
                    elif isinstance(event, h11.Data):
                        reply += event.data
                        if len(reply) > MAX_BODY:
                            raise HttpClientError(url, f"response larger than {MAX_BODY} bytes")
                    elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                        break
    except TimeoutError:
        raise HttpClientError(url, f"no answer within {timeout:g}s") from None
    except (OSError, h11.ProtocolError) as exc:
        # anyio reports "All connection attempts failed" and chains the real cause.
        cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
        reason = getattr(cause, "strerror", None) or str(cause) or type(cause).__name__
        raise HttpClientError(url, reason) from exc
    return HttpReply(status, reply_headers, bytes(reply))
