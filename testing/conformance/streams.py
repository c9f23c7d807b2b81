"""The suite's gRPC, TCP, TLS and WebSocket helpers (``utils/grpc``, ``utils/tcp``,
``utils/tls``, the WebSocket test's dialer) over real sockets; each returns None when the
exchange passed, else why not.

gRPC calls go through grpcio to the echo server's ``GrpcEcho`` service, its messages built
from the same descriptor the echo backend serves (``pilotfish.demo.echo_grpc``). As in Go,
one channel serves every attempt of an exchange and is rebuilt after an ``INTERNAL``.
"""

from __future__ import annotations

import json
import random
import socket
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import grpc
import wsproto
import wsproto.events

from pilotfish.demo.echo_grpc import SERVICE, messages

from .exchanges import Failed, Objects, Target, await_convergence, weighted
from .model import (
    FAILURE,
    GRPCExpectedResponse,
    TCPEcho,
    TCPExpectedResponse,
    TLSConnectionRejected,
    WebSocketEcho,
)
from .roundtrip import verify_hostname
from .timeouts import TimeoutConfig

WELCOME = "Gateway API Test TCP Server\n"
_TYPES: dict[str, Any] = {}


def _types() -> dict[str, Any]:
    if not _TYPES:
        _TYPES.update(messages())
    return _TYPES


# --- gRPC ---------------------------------------------------------------------------------


class _Client:
    """Go's ``DefaultClient``: one channel, reset after INTERNAL."""

    def __init__(self, address: str, authority: str) -> None:
        self.address = address
        self.options = [("grpc.default_authority", authority)] if authority else []
        self.channel: grpc.Channel | None = None

    def call(self, expected: GRPCExpectedResponse, timeout: float,
             metadata: Mapping[str, str]) -> tuple[str, Any]:
        """(the status code's name, the EchoResponse or None)."""
        if self.channel is None:
            self.channel = grpc.insecure_channel(self.address, options=self.options)
        types = _types()
        method = self.channel.unary_unary(
            f"/{SERVICE}/{expected.method}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=types["EchoResponse"].FromString)
        try:
            # metadata.New lowercases the keys, as HTTP/2 wants them
            answer = method(types["EchoRequest"](), timeout=max(timeout, 0.001),
                            metadata=[(k.lower(), v) for k, v in metadata.items()] or None)
        except grpc.RpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.INTERNAL:
                self.close()
            return go_code(code), None
        return "OK", answer

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None


def go_code(code: grpc.StatusCode) -> str:
    """A status code as Go's ``codes.Code.String()`` names it (``Unimplemented``)."""
    if code == grpc.StatusCode.OK:
        return "OK"
    if code == grpc.StatusCode.CANCELLED:
        return "Canceled"
    return "".join(part.capitalize() for part in code.name.split("_"))


def _compare_grpc(expected: GRPCExpectedResponse, code: str, answer: Any) -> str | None:
    """``compareResponse``."""
    if code != expected.code:
        return f"expected status code to be {expected.code}, but got {code}"
    if code == "OK":
        want = f"/{SERVICE}/{expected.method}"
        assertions = answer.assertions
        if assertions.fully_qualified_method != want:
            return f"expected path to be {want}, got {assertions.fully_qualified_method}"
        if expected.namespace and expected.namespace != assertions.context.namespace:
            return (f"expected namespace to be {expected.namespace}, got "
                    f"{assertions.context.namespace}")
        if not assertions.context.pod.startswith(expected.backend):
            return (f"expected pod name to start with {expected.backend}, got "
                    f"{assertions.context.pod}")
    return None


def grpc_exchange(expected: GRPCExpectedResponse, target: Target, t: TimeoutConfig
                  ) -> str | None:
    """``grpc.MakeRequestAndExpectEventuallyConsistentResponse`` (and ``...Failure``)."""
    client = _Client(f"{target.address}:{target.port}", expected.authority)
    started = time.monotonic()

    def attempt() -> str | None:
        remaining = t.max_time_to_consistency - (time.monotonic() - started)
        code, answer = client.call(expected, remaining, expected.metadata)
        if expected.outcome == FAILURE:
            if code == "OK":
                raise Failed("request should have failed, but got status OK")
            return None
        return _compare_grpc(expected, code, answer)

    try:
        return await_convergence(attempt, t)
    finally:
        client.close()


def grpc_weights(expected: GRPCExpectedResponse, weights: Mapping[str, float], target: Target,
                 t: TimeoutConfig, tries: int = 10) -> str | None:
    """The gRPC weight test: each request with random entropy (an ``x-jitter`` metadata)."""
    client = _Client(f"{target.address}:{target.port}", expected.authority)

    def send() -> str:
        metadata = dict(expected.metadata)
        if random.randrange(2):
            metadata["x-jitter"] = str(random.randrange(10000))
        code, answer = client.call(expected, t.request_timeout, metadata)
        problem = _compare_grpc(expected, code, answer)
        if problem:
            raise OSError(problem)
        return str(answer.assertions.context.pod)

    try:
        last = None
        for _ in range(tries):
            last = weighted(send, weights)
            if last is None:
                return None
        return f"weighted distribution tests failed: {last}"
    finally:
        client.close()


# --- TCP and TLS streams --------------------------------------------------------------------


def _dial(target: Target, t: TimeoutConfig, context: ssl.SSLContext | None = None,
          server_name: str = "") -> socket.socket:
    sock = socket.create_connection((target.address, target.port), timeout=t.request_timeout)
    if context is not None:
        try:
            sock = context.wrap_socket(sock, server_hostname=server_name or None)
            verify_hostname(sock, server_name)
        except BaseException:
            sock.close()
            raise
    sock.settimeout(t.request_timeout)
    return sock


def _line(reader: Any) -> str:
    line = reader.readline()
    if not line.endswith(b"\n"):
        raise OSError("EOF")
    return str(line.decode())


def tcp_exchange(expected: TCPExpectedResponse, target: Target, objects: Objects,
                 t: TimeoutConfig) -> str | None:
    """``MakeTCPRequestAndExpectEventuallyValidResponse``: retried until one conversation
    completes; what it said must then be right (Go asserts without retrying)."""
    context = None
    if expected.use_tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False  # Go's rules: verify_hostname
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if expected.ca_certificate is not None:
            context.load_verify_locations(
                cadata=objects.configmap_data(expected.ca_certificate)["ca.crt"])
        else:
            context.load_default_certs()
    deadline = time.monotonic() + t.max_time_to_consistency
    last = "no attempt made"
    while time.monotonic() < deadline:
        try:
            with _dial(target, t, context, expected.server_name) as sock:
                reader = sock.makefile("rb")
                talk = [_line(reader)]
                for command in ("PING", "IS_TLS", "TEST"):
                    sock.sendall(f"{command}\n".encode())
                    talk.append(_line(reader))
        except (OSError, ssl.SSLError) as exc:
            last = f"an error occurred during assertion, will retry: {exc}"
            time.sleep(t.default_poll_interval)
            continue
        return _check_tcp(expected, talk)
    return f"condition never satisfied: {last}"


def _check_tcp(expected: TCPExpectedResponse, talk: list[str]) -> str | None:
    welcome, pong, is_tls, test = talk
    problems = []
    if welcome != WELCOME:
        problems.append(f"TCPServer welcome message does not match: {welcome!r}")
    if pong != "PONG\n":
        problems.append(f"expected PONG, got {pong!r}")
    if is_tls.rstrip("\n") != ("true" if expected.backend_is_tls else "false"):
        problems.append(f"IS_TLS: expected {expected.backend_is_tls}, got {is_tls.strip()}")
    try:
        payload = json.loads(test)
    except ValueError:
        return f"TEST answer is not JSON: {test!r}"
    if payload.get("namespace") != expected.namespace:
        problems.append(f"namespace does not match: {payload.get('namespace')}")
    if not str(payload.get("pod", "")).startswith(f"{expected.backend}-"):
        problems.append(f"backend name does not match with pod prefix. pod="
                        f"{payload.get('pod')} and backend={expected.backend}")
    tls = payload.get("tls") or {}
    if expected.hostname and tls.get("serverName") != expected.hostname:
        problems.append(f"SNI seen by the backend: {tls.get('serverName')!r}, expected "
                        f"{expected.hostname!r}")
    if expected.tls_protocol and tls.get("negotiatedProtocol") != expected.tls_protocol:
        problems.append(f"negotiated protocol {tls.get('negotiatedProtocol')!r}, expected "
                        f"{expected.tls_protocol!r}")
    return "; ".join(problems) or None


def echo_send_once(target: Target, t: TimeoutConfig) -> str:
    """``tcp.EchoSendOnce``: the answering pod's name."""
    with _dial(target, t) as sock:
        reader = sock.makefile("rb")
        welcome = _line(reader)
        if welcome != WELCOME:
            raise OSError(f"unexpected TCP welcome message: {welcome!r}")
        sock.sendall(b"TEST\n")
        line = _line(reader)
    try:
        pod = str(json.loads(line).get("pod") or "")
    except ValueError as exc:
        raise OSError(f"decoding TCP echo response {line!r}: {exc}") from exc
    if not pod:
        raise OSError(f"TCP echo response missing pod name: {line!r}")
    return pod


def tcp_echo(check: TCPEcho, target: Target, t: TimeoutConfig) -> str | None:
    """``ExpectEchoResponse`` / ``ExpectAddressBeAvailable``, or the Go test's own loop."""
    if check.times:
        for number in range(check.times):
            try:
                pod = echo_send_once(target, t)
            except OSError as exc:
                return f"connection {number + 1}: {exc}"
            if not pod.startswith(check.pod_prefix):
                return f"connection {number + 1} answered by {pod}, want {check.pod_prefix}*"
        return None

    def probe() -> bool:
        if check.connect_only:
            socket.create_connection((target.address, target.port),
                                     timeout=t.request_timeout).close()
        else:
            echo_send_once(target, t)
        return True
    return _poll(probe, t, "TCP echo response")


def _poll(probe: Callable[[], bool], t: TimeoutConfig, what: str) -> str | None:
    deadline = time.monotonic() + t.max_time_to_consistency
    last = ""
    while True:
        try:
            if probe():
                return None
        except OSError as exc:
            last = str(exc)
        if time.monotonic() > deadline:
            return f"failed waiting for a {what} after {t.max_time_to_consistency:g}s: {last}"
        time.sleep(t.default_poll_interval)


def _rejected(exc: BaseException) -> bool:
    """``isConnectionRejected``: EOF or a reset during the handshake."""
    if isinstance(exc, ssl.SSLEOFError | ConnectionResetError | EOFError):
        return True
    text = str(exc)
    return "EOF" in text or "connection reset by peer" in text.lower() or \
        "UNEXPECTED_EOF" in text


def tls_rejected(check: TLSConnectionRejected, target: Target, t: TimeoutConfig) -> str | None:
    """``MakeTLSConnectionAndExpectEventuallyConnectionRejection``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False  # Go's rules: verify_hostname
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_default_certs()
    deadline = time.monotonic() + t.max_time_to_consistency
    last = ""
    while time.monotonic() < deadline:
        try:
            _dial(target, t, context, check.server_name).close()
            last = "client could connect"
        except BaseException as exc:
            if _rejected(exc):
                return None
            last = f"client could not connect: {exc}; retrying"
        time.sleep(t.default_poll_interval)
    return f"condition never satisfied: {last}"


# --- WebSocket ------------------------------------------------------------------------------


def websocket_echo(check: WebSocketEcho, target: Target, t: TimeoutConfig) -> str | None:
    """The WebSocket test's loop: dial, a text message and a binary one must come back as
    sent; retried until that holds consistently (``AwaitConvergence``)."""

    def attempt() -> str | None:
        try:
            with _dial(target, t) as sock:
                return _websocket_talk(check, sock, target.netloc("ws"))
        except OSError as exc:
            return f"failed to dial: {exc}"

    return await_convergence(attempt, t)


def _websocket_talk(check: WebSocketEcho, sock: socket.socket, host: str) -> str | None:
    ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    events = _websocket_events(ws, sock)
    sock.sendall(ws.send(wsproto.events.Request(
        host=host, target=check.path, extra_headers=[(b"origin", check.origin.encode())])))
    answer = next(events)
    if not isinstance(answer, wsproto.events.AcceptConnection):
        status = getattr(answer, "status_code", "")
        return f"failed to dial: the handshake was answered {status or type(answer).__name__}"
    sent: wsproto.events.TextMessage | wsproto.events.BytesMessage
    for sent in (wsproto.events.TextMessage(data=check.text),
                 wsproto.events.BytesMessage(data=check.binary)):
        sock.sendall(ws.send(sent))
        parts = []
        for event in events:
            if not isinstance(event, wsproto.events.Message):
                return f"failed to receive a message: got {type(event).__name__}"
            parts.append(event.data)
            if event.message_finished:
                break
        got = "".join(parts) if isinstance(sent.data, str) else b"".join(parts)
        if got != sent.data:
            return f"unexpected reply - want: {sent.data!r} got: {got!r}"
    sock.sendall(ws.send(wsproto.events.CloseConnection(code=1000)))
    return None


def _websocket_events(ws: wsproto.WSConnection, sock: socket.socket
                      ) -> Iterator[wsproto.events.Event]:
    """The connection's events, reading as needed; a closed socket is an OSError."""
    while True:
        data = sock.recv(65536)
        if not data:
            raise OSError("the connection was closed")
        ws.receive_data(data)
        yield from ws.events()
