"""``pilotfish agent request``: the injected sidecar's preStop hook (``POST drain`` on the
status port), against a small local server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from pilotfish.cli.main import main


class Recorder(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[tuple[str, str, bytes]] = []


class _Handler(BaseHTTPRequestHandler):
    server: Recorder

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append(("POST", self.path, body))
        status, text = (200, b"draining\n") if self.path == "/drain" else (404, b"no such path")
        self.send_response(status)
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def test_the_prestop_hook_posts_drain_to_the_status_port(recorder: Recorder, capsys):
    port = recorder.server_address[1]
    assert main(["agent", "request", f"--debug-port={port}", "POST", "drain"]) == 0
    assert recorder.seen == [("POST", "/drain", b"")]
    assert capsys.readouterr().out == "draining\n"


def test_an_error_answer_or_no_answer_is_exit_status_1(recorder: Recorder, capsys):
    port = recorder.server_address[1]
    assert main(["agent", "request", "--debug-port", str(port), "POST", "/other"]) == 1
    assert f"POST http://127.0.0.1:{port}/other: HTTP 404: no such path" in \
        capsys.readouterr().err
    recorder.shutdown()
    recorder.server_close()
    assert main(["agent", "request", "--debug-port", str(port), "POST", "drain"]) == 1
