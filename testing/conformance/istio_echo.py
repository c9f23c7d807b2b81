"""A stand-in for the suite's ``echo-advanced`` image (Istio's echo app), which the mesh
tests run their requests from and to. The local node runs no images; the runner gives the
mesh manifests' echo containers this module as their command.

``server`` (the image's entrypoint, taking its flags: ``--port`` for HTTP, ``--tls`` for
the ports among them that speak TLS with ``--crt``/``--key``, ``--tcp``, ``--grpc``)
answers every HTTP request with Istio's echo body, one ``Key=value`` line each::

    ServiceVersion=v1
    ServicePort=8080
    Host=echo
    URL=/path
    Method=GET
    Proto=HTTP/1.1
    IP=10.0.0.7
    RequestHeader=Name:value
    Hostname=echo-v1-5d4f8c7b9-abcde

TCP ports echo what they get; gRPC ports accept connections and serve nothing (none of the
mesh tests the runner reports on speaks gRPC to the echo app).

``client URL [--method=M] [-H name:value ...] [--count=N]`` sends the request(s) on one
kept-alive connection, without following redirects, and prints what Istio's echo client
prints: per request ``[i] Url=``,
``[i] StatusCode=``, ``[i] ResponseHeader=Name:value`` lines, then the body's lines as
``[i body] Key=value``; requests separated by a blank line. The suite parses this output
(``utils/echo/parse.go``).
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import socketserver
import ssl
import sys
import tempfile
import threading
import urllib.parse
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def body_lines(handler: BaseHTTPRequestHandler, port: int) -> list[str]:
    hostname = os.environ.get("POD_NAME") or socket.gethostname()
    lines = [f"ServiceVersion={os.environ.get('SERVICE_VERSION', '')}", f"ServicePort={port}",
             f"Host={handler.headers.get('Host', '')}", f"URL={handler.path}",
             f"Method={handler.command}", f"Proto={handler.request_version}",
             f"IP={handler.client_address[0]}"]
    lines += [f"RequestHeader={name}:{value}" for name, value in handler.headers.items()]
    lines.append(f"Hostname={hostname}")
    return lines


def _handler(port: int) -> type[BaseHTTPRequestHandler]:
    class Echo(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            body = ("\n".join(body_lines(self, port)) + "\n").encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _answer

        def log_message(self, format: str, *args: object) -> None:
            print(f"{self.client_address[0]} {format % args}", flush=True)

    return Echo


class _TCPEcho(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


class _Silent(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.recv(1)


class _TCPServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def _self_signed(folder: Path) -> tuple[Path, Path]:
    from pilotfish.testing.certs import self_signed

    cert, key = self_signed("echo")
    (folder / "cert.crt").write_bytes(cert)
    (folder / "cert.key").write_bytes(key)
    return folder / "cert.crt", folder / "cert.key"


def serve(args: argparse.Namespace) -> int:
    http_ports = args.port or [8080, 8443]
    tls_ports = set(args.tls or ([] if args.port else [8443]))
    servers: list[socketserver.BaseServer] = []
    context = None
    if tls_ports:
        cert, key = Path(args.crt), Path(args.key)
        if not (cert.is_file() and key.is_file()):  # the image ships its own pair
            cert, key = _self_signed(Path(tempfile.mkdtemp(prefix="echo-")))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
    for port in dict.fromkeys(http_ports):
        web = ThreadingHTTPServer(("0.0.0.0", port), _handler(port))
        if port in tls_ports and context is not None:
            web.socket = context.wrap_socket(web.socket, server_side=True)
        servers.append(web)
    for port in args.tcp or [9090]:
        servers.append(_TCPServer(("0.0.0.0", port), _TCPEcho))
    for port in args.grpc or [7070]:
        servers.append(_TCPServer(("0.0.0.0", port), _Silent))
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    ports = sorted(int(s.server_address[1]) for s in servers
                   if isinstance(s, socketserver.TCPServer))
    print(f"echo listening on {ports}", flush=True)
    threading.Event().wait()
    return 0


class Client:
    """Istio's echo client: requests to one URL, on one kept-alive connection (a new one
    after an error), lines as the client prints them."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.parts = urllib.parse.urlsplit(url)
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        parts = self.parts
        if parts.scheme == "https":
            return http.client.HTTPSConnection(
                parts.hostname or "", parts.port or 443, timeout=self.timeout,
                context=ssl._create_unverified_context())
        return http.client.HTTPConnection(parts.hostname or "", parts.port or 80,
                                          timeout=self.timeout)

    def request(self, method: str, headers: Sequence[tuple[str, str]]) -> list[str]:
        target = self.parts.path or "/"
        if self.parts.query:
            target += "?" + self.parts.query
        conn = self.conn or self._connect()
        self.conn = None
        try:
            conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            if "host" not in {name.lower() for name, _ in headers}:
                conn.putheader("Host", self.parts.netloc)
            for name, value in headers:
                conn.putheader(name, value)
            conn.endheaders()
            response = conn.getresponse()
            body = response.read().decode(errors="replace")
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise OSError(str(exc) or type(exc).__name__) from exc
        if response.will_close:
            conn.close()
        else:
            self.conn = conn
        lines = [f"Url={self.url}", f"StatusCode={response.status}"]
        lines += [f"ResponseHeader={name}:{value}" for name, value in response.getheaders()]
        return lines + [f"body] {line}" for line in body.splitlines() if line]


def client(args: argparse.Namespace) -> int:
    headers = []
    for header in args.header or ():
        name, _, value = header.partition(":")
        headers.append((name.strip(), value.strip()))
    echo = Client(args.url, args.timeout)
    blocks = []
    failed = 0
    for number in range(max(args.count, 1)):
        try:
            lines = echo.request(args.method, headers)
        except OSError as exc:
            failed += 1
            print(f"[{number}] error: {exc}", file=sys.stderr)
            continue
        blocks.append("\n".join(
            f"[{number} {line}" if line.startswith("body]") else f"[{number}] {line}"
            for line in lines))
    print("\n\n".join(blocks))
    return 1 if failed and not blocks else 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["client"]:
        parser = argparse.ArgumentParser(prog="istio_echo client")
        parser.add_argument("url")
        parser.add_argument("--method", default="GET")
        parser.add_argument("-H", "--header", action="append")
        parser.add_argument("--count", type=int, default=1)
        parser.add_argument("--timeout", type=float, default=5.0)
        return client(parser.parse_args(argv[1:]))
    parser = argparse.ArgumentParser(prog="istio_echo")
    for flag in ("--port", "--tls", "--tcp", "--grpc"):
        parser.add_argument(flag, action="append", type=int)
    parser.add_argument("--crt", default="/cert.crt")
    parser.add_argument("--key", default="/cert.key")
    return serve(parser.parse_args(argv[1:] if argv[:1] == ["server"] else argv))


if __name__ == "__main__":
    sys.exit(main())
