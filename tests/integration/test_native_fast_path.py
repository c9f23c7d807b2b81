"""The native proxy's callback path (`core/native/fast_path.py`) and what it hands to the
serving task, over real sockets: a keep-alive client, the proxy in process, and an upstream
HTTP/1.1 server that misbehaves on cue. Each case starts with a plain request, so the
upstream connection is pooled and the case's request finds it; the
proxy's ``fast_taken`` / ``fast_handed`` counts say which path finished it. The answers,
and Envoy's counters, are what the task path gives (the other native suites run it)."""

from __future__ import annotations

import asyncio
from typing import Any

from pilotfish.core.native import http1, http1_codec
from pilotfish.core.native.proxy import NativeProxy
from pilotfish.testing.processes import free_port

from .test_native_tunnels import HCM, listener, proxy_with, static_cluster

BIG = 2 * 1024 * 1024  # past the proxy's 1 MiB: an upload or answer this long streams
FAULT = "envoy.filters.http.fault"
FAULT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"


def route(prefix: str, **action: Any) -> dict[str, Any]:
    return {"match": {"prefix": prefix}, "route": {"cluster": "backend", **action}}


def manager(port: int) -> dict[str, Any]:
    abort = {"abort": {"http_status": 418,
                       "percentage": {"numerator": 100, "denominator": "HUNDRED"}}}
    return listener("front", port, {
        "@type": HCM, "stat_prefix": "front",
        "http_filters": [
            {"name": FAULT, "typed_config": {"@type": FAULT_TYPE}},
            {"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3."
                         "Router"}}],
        "route_config": {"name": "front", "virtual_hosts": [{
            "name": "all", "domains": ["*"], "routes": [
                route("/reset", retry_policy={"retry_on": "reset", "num_retries": 1}),
                route("/slow", timeout="5s", retry_policy={
                    "retry_on": "5xx", "num_retries": 1, "per_try_timeout": "0.2s"}),
                route("/unavailable", retry_policy={"retry_on": "5xx", "num_retries": 2}),
                {"match": {"prefix": "/fault"}, "route": {"cluster": "backend"},
                 "typed_per_filter_config": {FAULT: {"@type": FAULT_TYPE, **abort}}},
                route("/")]}]}})


class Upstream:
    """An HTTP/1.1 server answering by path: ``/reset`` closes without an answer while
    ``resets`` lasts, ``/unavailable`` answers 503 while ``unavailable`` lasts,
    ``/slow`` waits 0.5 s, ``/big`` answers 2 MiB, ``/cut`` closes part way through its
    body, ``/close`` closes after its answer; anything else is answered with the length
    of the body it came with."""

    def __init__(self) -> None:
        self.resets = self.unavailable = 0
        self.connections = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                length = next((int(line.split(":", 1)[1]) for line in lines
                               if line.lower().startswith("content-length:")), 0)
                body = await reader.readexactly(length)
                if path.startswith("/reset") and self.resets:
                    self.resets -= 1
                    writer.transport.abort()
                    return
                if path.startswith("/cut"):
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
                    await writer.drain()
                    writer.close()
                    return
                if path.startswith("/slow"):
                    await asyncio.sleep(0.5)
                status = 200
                if path.startswith("/unavailable") and self.unavailable:
                    self.unavailable -= 1
                    status = 503
                answer = b"x" * BIG if path.startswith("/big") else str(len(body)).encode()
                closing = path.startswith("/close")
                writer.write(b"HTTP/1.1 %d Answer\r\ncontent-length: %d\r\n%b\r\n%b"
                             % (status, len(answer),
                                b"connection: close\r\n" if closing else b"", answer))
                await writer.drain()
                if closing:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


class Client:
    """One keep-alive connection to the proxy."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.parser = http1_codec.Parser(response=True)

    async def ask(self, path: str, body: bytes = b"") -> http1.Message:
        method = "POST" if body else "GET"
        self.writer.write(f"{method} {path} HTTP/1.1\r\nhost: web\r\n"
                          f"content-length: {len(body)}\r\n\r\n".encode() + body)
        while (message := self.parser.next()) is None:
            data = await asyncio.wait_for(self.reader.read(65536), 5)
            assert data, "the proxy closed the connection"
            self.parser.feed(data)
        return message


async def setup() -> tuple[NativeProxy, Upstream, asyncio.Server, Client]:
    upstream = Upstream()
    server = await asyncio.start_server(upstream.serve, "127.0.0.1", 0)
    port = free_port()
    proxy = await proxy_with([static_cluster("backend", server.sockets[0].getsockname()[1])],
                             [manager(port)])
    client = Client(*await asyncio.open_connection("127.0.0.1", port))
    # no pooled upstream connection yet: the callback path hands the first request to
    # the task, which connects (and pools the connection)
    first = await client.ask("/")
    assert first.status == 200
    assert (proxy.fast_taken, proxy.fast_handed) == (1, 1)
    return proxy, upstream, server, client


def run(case: Any) -> None:
    async def main() -> None:
        proxy, upstream, server, client = await setup()
        try:
            await case(proxy, upstream, client)
        finally:
            client.writer.close()
            proxy.drain()
            server.close()

    asyncio.run(main())


def test_plain_requests_are_served_whole_from_the_callbacks():
    async def case(proxy: NativeProxy, upstream: Upstream, client: Client) -> None:
        for _ in range(3):
            answer = await client.ask("/", b"12345")
            assert answer.status == 200 and answer.body == b"5"
            assert answer.header("server") == "istio-envoy"
            assert answer.header("x-envoy-upstream-service-time") is not None
        assert (proxy.fast_taken, proxy.fast_handed) == (4, 1)
        assert upstream.connections == 1  # the pooled connection, reused
        counters = proxy.stats.counters
        assert counters["http.front.downstream_rq_total"] == 4
        assert counters["cluster.backend.upstream_rq_200"] == 4

    run(case)


def test_a_connection_per_request_is_served_from_the_callbacks():
    async def case(proxy: NativeProxy, upstream: Upstream, client: Client) -> None:
        port = client.writer.get_extra_info("peername")[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nhost: web\r\nconnection: close\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 5)  # to the proxy's close
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"\r\n\r\n0")
        assert (proxy.fast_taken, proxy.fast_handed) == (2, 1)  # its first request too
        assert upstream.connections == 1

    run(case)


def test_no_idle_pooled_connection_hands_the_request_to_the_task():
    async def case(proxy: NativeProxy, upstream: Upstream, client: Client) -> None:
        assert (await client.ask("/close")).status == 200  # its connection is not kept
        assert (proxy.fast_taken, proxy.fast_handed) == (2, 1)
        assert (await client.ask("/")).status == 200  # the task connects
        assert (proxy.fast_taken, proxy.fast_handed) == (3, 2)
        assert upstream.connections == 2

    run(case)


def test_a_reset_after_sending_is_retried_by_the_task():
    async def case(proxy: NativeProxy, upstream: Upstream, client: Client) -> None:
        upstream.resets = 1
        answer = await client.ask("/reset")
        assert answer.status == 200
        assert (proxy.fast_taken, proxy.fast_handed) == (2, 2)
        assert proxy.stats.counters["cluster.backend.upstream_rq_retry"] == 1
        assert upstream.connections == 2  # the retry connected anew
        assert (await client.ask("/")).status == 200  # and the callback path goes on
        assert (proxy.fast_taken, proxy.fast_handed) == (3, 2)

    run(case)


def test_a_per_try_timeout_on_the_callback_path_answers_504():
    async def case(proxy: NativeProxy, upstream: Upstream, client: Client) -> None:
        answer = await client.ask("/slow")
        assert answer.status == 504 and answer.body == b"upstream request timeout"
        assert (proxy.fast_taken, proxy.fast_handed) == (2, 2)
        assert (await client.ask("/")).status == 200  # on a new upstream connection
        assert upstream.connections == 2

    run(case)


def test_a_retried_status_is_retried_by_the_task():
    async def case(proxy: NativeProxy, upstream: Upstream, client: Client) -> None:
        upstream.unavailable = 1
        answer = await client.ask("/unavailable")
        assert answer.status == 200
        assert (proxy.fast_taken, proxy.fast_handed) == (2, 2)
        assert upstream.unavailable == 0  # the 503 came, and the retry was answered

    run(case)


def test_streamed_bodies_go_the_task_path():
    async def case(proxy: NativeProxy, upstream: Upstream, client: Client) -> None:
        upload = await client.ask("/", b"u" * BIG)  # streamed up: never taken
        assert upload.status == 200 and upload.body == str(BIG).encode()
        assert (proxy.fast_taken, proxy.fast_handed) == (1, 1)
        download = await client.ask("/big")  # taken, its long answer streamed by the task
        assert download.status == 200 and len(download.body) == BIG
        assert (proxy.fast_taken, proxy.fast_handed) == (2, 2)
        assert (await client.ask("/")).status == 200
        assert (proxy.fast_taken, proxy.fast_handed) == (3, 2)

    run(case)


def test_a_route_with_a_filter_goes_the_task_path():
    async def case(proxy: NativeProxy, upstream: Upstream, client: Client) -> None:
        answer = await client.ask("/fault")
        assert answer.status == 418 and answer.body == b"fault filter abort"
        assert (proxy.fast_taken, proxy.fast_handed) == (1, 1)
        assert proxy.stats.counters["http.front.fault.aborts_injected"] == 1

    run(case)


def test_an_upstream_closing_mid_answer_is_a_503():
    async def case(proxy: NativeProxy, upstream: Upstream, client: Client) -> None:
        answer = await client.ask("/cut")
        assert answer.status == 503
        assert answer.body.startswith(b"upstream connect error or disconnect/reset")
        assert (proxy.fast_taken, proxy.fast_handed) == (2, 2)
        assert (await client.ask("/")).status == 200
        assert upstream.connections == 2

    run(case)


def test_pipelined_requests_are_answered_in_order():
    async def case(proxy: NativeProxy, upstream: Upstream, client: Client) -> None:
        requests = b"".join(b"POST / HTTP/1.1\r\nhost: web\r\ncontent-length: %d\r\n\r\n%b"
                            % (n, b"p" * n) for n in (1, 22, 333))
        client.writer.write(requests)
        bodies = []
        for _ in range(3):
            while (message := client.parser.next()) is None:
                client.parser.feed(await asyncio.wait_for(client.reader.read(65536), 5))
            bodies.append(message.body)
        assert bodies == [b"1", b"22", b"333"]

    run(case)
