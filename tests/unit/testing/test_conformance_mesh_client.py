"""Mesh requests: the echo client's output as the suite parses it, its comparison, and the
echo stand-in answering a real client over loopback."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

from pilotfish.testing.conformance import mesh_client
from pilotfish.testing.conformance.model import (
    ExpectedRequest,
    ExpectedResponse,
    Request,
    Response,
)
from pilotfish.testing.processes import free_port

OUTPUT = """\
[0] Url=http://echo/
[0] StatusCode=200
[0] ResponseHeader=X-Header-Set:set
[0] ResponseHeader=Content-Type:text/plain
[0 body] ServiceVersion=
[0 body] Host=echo
[0 body] RequestHeader=Host:echo
[0 body] RequestHeader=X-Two:a
[0 body] RequestHeader=X-Two:b
[0 body] Hostname=echo-v1-5d4f8c7b9-abcde"""


def test_the_echo_clients_output_parses_as_the_suite_reads_it():
    parsed = mesh_client.parse(OUTPUT)
    assert (parsed.code, parsed.hostname) == ("200", "echo-v1-5d4f8c7b9-abcde")
    assert parsed.request_headers["x-two"] == ["a", "b"]
    assert parsed.response_headers["x-header-set"] == ["set"]
    assert len(mesh_client.parse_many(OUTPUT + "\n\n" + OUTPUT.replace("[0", "[1"))) == 2


def test_mesh_comparison_reads_codes_headers_and_the_pod_only():
    expected = ExpectedResponse(request=Request(host="echo", path="/elsewhere"),
                                expected_request=ExpectedRequest(
                                    request=Request(headers={"X-Two": "a,b"})),
                                response=Response(headers={"X-Header-Set": "set"}),
                                backend="echo-v1")
    assert mesh_client.compare(expected, mesh_client.parse(OUTPUT)) is None
    assert "echo-v2" in str(mesh_client.compare(
        ExpectedResponse(backend="echo-v2"), mesh_client.parse(OUTPUT)))
    assert "no header" in str(mesh_client.compare(
        ExpectedResponse(response=Response(absent_headers=("x-header-set",))),
        mesh_client.parse(OUTPUT)))


def test_client_arguments_are_the_go_suites():
    args = mesh_client.client_args(ExpectedResponse(request=Request(
        path="/x", headers={"Host": "echo-v1"})), count=500)
    assert args[len(mesh_client.ECHO_CLIENT):] == [
        "http://echo/x", "--method=GET", "-H", "Host:echo-v1", "--count=500"]


def test_the_echo_stand_in_answers_its_client():
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "pilotfish.testing.conformance.istio_echo", f"--port={port}",
         f"--tcp={free_port()}", f"--grpc={free_port()}"],
        env={"POD_NAME": "echo-v1-abc-def"}, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the echo server did not start"
                time.sleep(0.05)
        out = subprocess.run(
            [*mesh_client.ECHO_CLIENT, f"http://127.0.0.1:{port}/p?q=1", "-H", "X-A:b",
             "--count=2"], capture_output=True, text=True, timeout=30, check=True).stdout
    finally:
        server.terminate()
        server.wait(10)
    first, _ = mesh_client.parse_many(out)
    assert first.code == "200" and first.hostname == "echo-v1-abc-def"
    assert first.request_headers["x-a"] == ["b"]
    assert "URL=/p?q=1" in out
