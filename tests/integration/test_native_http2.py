"""HTTP/2 through the native proxy as a gateway, against real discovery and real backends:
gRPC from a real gRPC client to a real gRPC server (h2c both ways, statuses in trailers,
metadata through), and HTTP/1.1 clients reaching an HTTP/2-only upstream."""

from __future__ import annotations

import queue
import socket
import sys
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from pilotfish.demo import echo_grpc
from pilotfish.testing.config import backend, documents, ingress_gateway
from pilotfish.testing.mesh import LocalMesh, Proxy
from pilotfish.testing.processes import Process, free_port, http, wait_until

GRPC_ECHO = "127.0.21.5"
ROUTES = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: grpc-echo, namespace: default}
spec:
  hosts: ["*"]
  gateways: [edge]
  http:
  - match: [{uri: {prefix: /pilotfish.test.Chat/}}]
    route: [{destination: {host: chat, port: {number: 80}}}]
  - headers: {response: {set: {x-through: native}}}
    route: [{destination: {host: grpc-echo, port: {number: 80}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: chat, namespace: default}
spec:
  host: chat.default.svc.cluster.local
  trafficPolicy: {connectionPool: {http: {http2MaxRequests: 1}}}
"""
CHAT = "/pilotfish.test.Chat/Talk"


def chat_server(port: int) -> grpc.Server:
    """A bidirectional stream that answers each message as it comes, and a stream that
    only ends when its caller goes."""
    def talk(requests, context):  # type: ignore[no-untyped-def]
        for message in requests:
            yield b"heard:" + message

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "pilotfish.test.Chat", {"Talk": grpc.stream_stream_rpc_method_handler(talk)}),))
    server.add_insecure_port(f"{GRPC_ECHO}:{port}")
    server.start()
    return server


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    mesh = LocalMesh(tmp_path_factory.mktemp("native-h2"))
    try:
        port, grpc_port, chat_port = free_port(), free_port(), free_port()
        chat = chat_server(chat_port)
        mesh.write("mesh.yaml", documents(
            backend("grpc-echo", GRPC_ECHO, grpc_port, port_name="grpc"),
            backend("chat", GRPC_ECHO, chat_port, port_name="grpc"),
            ingress_gateway(port, protocol="GRPC"), ROUTES))
        mesh.start_discovery()
        echo = Process("grpc-echo", [sys.executable, "-m", "pilotfish.demo.echo_basic"],
                       mesh.workdir / "grpc-echo.log")
        mesh.processes.append(echo)
        echo.start({"GRPC_ECHO_SERVER": "1", "HTTP_PORT": str(grpc_port),
                    "POD_NAME": "grpc-echo-1", "NAMESPACE": "default"})

        def listening() -> bool:
            echo.check_running()
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", grpc_port)) == 0
        wait_until(listening, 15, what="the gRPC echo server")
        proxy = mesh.start_proxy("gw-1", "default", labels={"istio": "ingressgateway"},
                                 extra=["--proxy", "native"])
        yield port, proxy
    finally:
        mesh.stop()
        chat.stop(0)


def _stub(port: int) -> tuple[grpc.Channel, dict[str, object]]:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    types = echo_grpc.messages()
    calls = {name: channel.unary_unary(
        f"/{echo_grpc.SERVICE}/{name}", request_serializer=types["EchoRequest"].SerializeToString,
        response_deserializer=types["EchoResponse"].FromString)
        for name in ("Echo", "EchoThree")}
    return channel, {"types": types, **calls}


def test_grpc_calls_go_through_with_metadata_and_statuses(gateway: tuple[int, Proxy]):
    port, proxy = gateway
    channel, stub = _stub(port)
    request = stub["types"]["EchoRequest"]()  # type: ignore[index,operator]
    response, call = wait_until(lambda: stub["Echo"].with_call(  # type: ignore[union-attr]
        request, metadata=[("x-asked", "yes")], timeout=2), 15, what="gRPC through native")
    headers = {h.key: h.value for h in response.assertions.headers}
    assert response.assertions.fully_qualified_method == f"/{echo_grpc.SERVICE}/Echo"
    assert headers["x-asked"] == "yes"
    assert "x-request-id" in headers and "x-forwarded-proto" in headers
    assert dict(call.initial_metadata())["x-through"] == "native"
    # a status other than OK travels in the trailers, and comes back as it was sent
    with pytest.raises(grpc.RpcError) as failed:
        stub["EchoThree"](request, timeout=2)  # type: ignore[operator]
    assert failed.value.code() == grpc.StatusCode.UNIMPLEMENTED
    # many calls at once share one connection and all come back
    futures = [stub["Echo"].future(request, timeout=5) for _ in range(50)]  # type: ignore[union-attr]
    assert all(f.result().assertions.fully_qualified_method for f in futures)
    channel.close()
    stats = dict(line.split(": ", 1) for line in
                 http(f"{proxy.admin}/stats").body.decode().splitlines() if ": " in line)
    served = [int(v) for k, v in stats.items() if k.endswith(".downstream_rq_http2_total")]
    assert served and served[0] >= 52, stats
    upstream = [k for k in stats if k.startswith("cluster.outbound|80||grpc-echo") and
                k.endswith("upstream_cx_total")]
    assert upstream and int(stats[upstream[0]]) <= 2  # multiplexed, not one per call


def test_an_http1_client_reaches_the_http2_upstream(gateway: tuple[int, Proxy]):
    port, _ = gateway
    # gRPC-Web-less HTTP/1.1 can still reach an h2-only server: the status is HTTP's
    result = http(f"http://127.0.0.1:{port}/{echo_grpc.SERVICE}/Echo", method="POST",
                  headers={"content-type": "application/grpc", "te": "trailers"},
                  data=b"\x00\x00\x00\x00\x00", timeout=5)
    assert result.status == 200
    assert result.headers.get("x-through") == "native"


def _open_chat(channel: grpc.Channel, first: bytes
               ) -> tuple[queue.Queue[bytes | None], Iterator[bytes]]:
    """A bidirectional Chat stream that sends ``first``, then what is put on the queue
    (None ends it); and its answers."""
    outgoing: queue.Queue[bytes | None] = queue.Queue()

    def messages() -> Iterator[bytes]:
        while (message := outgoing.get()) is not None:
            yield message

    outgoing.put(first)
    return outgoing, channel.stream_stream(CHAT)(messages(), timeout=20)


def test_a_bidirectional_grpc_stream_goes_message_by_message(gateway: tuple[int, Proxy]):
    """Each answer comes back before the next message is sent: nothing waits for the
    stream to end."""
    port, _ = gateway
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    outgoing, answers = _open_chat(channel, b"one")
    assert next(answers) == b"heard:one"
    for word in (b"two", b"three"):
        outgoing.put(word)
        assert next(answers) == b"heard:" + word
    outgoing.put(None)
    assert list(answers) == []
    channel.close()


def test_a_streamed_call_counts_against_the_circuit_breaker(gateway: tuple[int, Proxy]):
    """A stream relayed message by message holds one of the cluster's requests while it
    lasts: with http2MaxRequests 1, a second call meanwhile is refused (UNAVAILABLE, the
    breaker's overflow) and one made after the first ends goes through."""
    port, proxy = gateway
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    talk = channel.stream_stream(CHAT)
    outgoing, held = _open_chat(channel, b"held")
    assert next(held) == b"heard:held"
    with pytest.raises(grpc.RpcError) as refused:
        list(talk(iter([b"second"]), timeout=5))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    outgoing.put(None)
    assert list(held) == []
    assert wait_until(lambda: list(talk(iter([b"after"]), timeout=5)) == [b"heard:after"],
                      10, what="a call once the stream held ended")
    channel.close()
    stats = http(f"{proxy.admin}/stats").body.decode()
    assert "cluster.outbound|80||chat.default.svc.cluster.local.upstream_rq_pending_overflow:" \
        in stats
