"""The native gRPC client (``core/native/grpc_client``) against grpcio's server, the peer
it must speak with (discovery's ADS and CA, the agent's SDS): unary calls and
bidirectional streams over mutual TLS and over a unix socket, metadata, statuses with
their messages, deadlines, messages larger than every HTTP/2 window, and the errors a
caller sees when the server is not there or does not speak HTTP/2."""

from __future__ import annotations

import asyncio
import ssl
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import wrappers_pb2

from pilotfish.core.native.grpc_client import Channel, GrpcError, Reframer, client_tls, frame
from pilotfish.testing.certs import ca_signed
from pilotfish.testing.mesh_ca import MeshCA

NAME = "istiod.istio-system.svc"
SERVER_CA, SERVER_CERT, SERVER_KEY = ca_signed(NAME)
MESH = MeshCA()
CLIENT = MESH.issue("shop", "web")
Bytes = wrappers_pb2.BytesValue


def run(main: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(main(), 30))


async def unary(request: Bytes, context: grpc.aio.ServicerContext) -> Bytes:
    metadata = dict(context.invocation_metadata() or ())
    if request.value == b"deny":
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, "not you: 100% sure")
    if request.value == b"slow":
        await asyncio.sleep(5)
    peer = context.auth_context().get("x509_common_name") or [b""]
    return Bytes(value=metadata.get("who", "").encode() + b"|" + peer[0] + b"|" +
                 request.value[:8] + str(len(request.value)).encode())


async def echo(requests: AsyncIterator[Bytes], context: grpc.aio.ServicerContext
               ) -> AsyncIterator[Bytes]:
    async for request in requests:
        if request.value == b"fail":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "fail asked")
        yield Bytes(value=request.value * 2)


# field 1, length-delimited, 16 bytes announced and none there: no message decodes from it
GARBAGE = b"\x0a\x10"


async def garbage(request: Bytes, context: grpc.aio.ServicerContext) -> bytes:
    return GARBAGE


async def garbage_stream(requests: AsyncIterator[Bytes], context: grpc.aio.ServicerContext
                         ) -> AsyncIterator[bytes]:
    async for _ in requests:
        yield GARBAGE


HANDLER = grpc.method_handlers_generic_handler("test.Echo", {
    "Garbage": grpc.unary_unary_rpc_method_handler(
        garbage, request_deserializer=Bytes.FromString, response_serializer=bytes),
    "GarbageStream": grpc.stream_stream_rpc_method_handler(
        garbage_stream, request_deserializer=Bytes.FromString, response_serializer=bytes),
    "Unary": grpc.unary_unary_rpc_method_handler(
        unary, request_deserializer=Bytes.FromString,
        response_serializer=Bytes.SerializeToString),
    "Stream": grpc.stream_stream_rpc_method_handler(
        echo, request_deserializer=Bytes.FromString,
        response_serializer=Bytes.SerializeToString),
})


async def server(address: str, secure: bool) -> tuple[grpc.aio.Server, int]:
    found = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20),
                                     ("grpc.max_send_message_length", 64 << 20)])
    found.add_generic_rpc_handlers((HANDLER,))
    if secure:
        credentials = grpc.ssl_server_credentials(
            [(SERVER_KEY, SERVER_CERT)], root_certificates=MESH.roots_pem,
            require_client_auth=True)
        port = found.add_secure_port(address, credentials)
    else:
        port = found.add_insecure_port(address)
    await found.start()
    return found, port


def tls() -> ssl.SSLContext:
    return client_tls(SERVER_CA, CLIENT.chain_pem, CLIENT.key_pem)


async def items(*values: bytes, hold: asyncio.Event | None = None) -> AsyncIterator[Any]:
    for value in values:
        yield Bytes(value=value)
    if hold is not None:
        await hold.wait()


def test_unary_over_mutual_tls_carries_metadata_and_large_messages():
    async def main() -> None:
        found, port = await server("127.0.0.1:0", secure=True)
        try:
            async with Channel(f"127.0.0.1:{port}", tls(), NAME) as channel:
                small = await channel.unary("/test.Echo/Unary", Bytes(value=b"hello"), Bytes,
                                            [("who", "me")], timeout=5)
                assert small.value == b"me||hello5"
                big = b"x" * (5 << 20)  # past the 64 KiB default windows, many frames
                answer = await channel.unary("/test.Echo/Unary", Bytes(value=big), Bytes)
                assert answer.value == b"||xxxxxxxx" + str(len(big)).encode()
        finally:
            await found.stop(None)

    run(main)


def test_a_refusal_carries_its_code_and_decoded_message():
    async def main() -> None:
        found, port = await server("127.0.0.1:0", secure=True)
        try:
            async with Channel(f"127.0.0.1:{port}", tls(), NAME) as channel:
                with pytest.raises(GrpcError) as info:
                    await channel.unary("/test.Echo/Unary", Bytes(value=b"deny"), Bytes)
                assert (info.value.code, info.value.details) == (
                    "PERMISSION_DENIED", "not you: 100% sure")
                with pytest.raises(GrpcError) as info:
                    await channel.unary("/test.Echo/Nope", Bytes(), Bytes)
                assert info.value.code == "UNIMPLEMENTED"
                with pytest.raises(GrpcError) as info:
                    await channel.unary("/test.Echo/Unary", Bytes(value=b"slow"), Bytes,
                                        timeout=0.3)
                assert info.value.code == "DEADLINE_EXCEEDED"
                # the connection is still good for the next call
                answer = await channel.unary("/test.Echo/Unary", Bytes(value=b"ok"), Bytes)
                assert answer.value == b"||ok2"
        finally:
            await found.stop(None)

    run(main)


def test_a_bidirectional_stream_over_a_unix_socket(tmp_path: Path):
    async def main() -> None:
        path = tmp_path / "grpc.sock"
        found, _ = await server(f"unix:{path}", secure=False)
        try:
            async with Channel(f"unix:{path}") as channel:
                hold = asyncio.Event()
                got = []
                big = b"y" * (3 << 20)
                async for answer in channel.stream(
                        "/test.Echo/Stream", items(b"a", big, b"c", hold=hold), Bytes):
                    got.append(answer.value)
                    if len(got) == 3:
                        break  # the client leaves with its side still open
                assert got == [b"aa", big * 2, b"cc"]
                # a second stream on the same connection, ended by the server's refusal
                with pytest.raises(GrpcError) as info:
                    async for _ in channel.stream("/test.Echo/Stream",
                                                  items(b"ok", b"fail", hold=hold), Bytes):
                        pass
                assert (info.value.code, info.value.details) == ("INVALID_ARGUMENT",
                                                                 "fail asked")
                # a stream whose requests end is ended OK by the server
                answers = [a.value async for a in channel.stream(
                    "/test.Echo/Stream", items(b"1", b"2"), Bytes)]
                assert answers == [b"11", b"22"]
        finally:
            await found.stop(None)

    run(main)


def test_a_server_that_is_not_there_or_not_trusted_is_unavailable(tmp_path: Path):
    async def main() -> None:
        with pytest.raises(GrpcError) as info:
            async with Channel(f"unix:{tmp_path}/none.sock"):
                pass
        assert info.value.code == "UNAVAILABLE" and "none.sock" in info.value.details
        found, port = await server("127.0.0.1:0", secure=True)
        try:
            with pytest.raises(GrpcError) as info:  # the server's name is not this one
                async with Channel(f"127.0.0.1:{port}", tls(), "other.example"):
                    pass
            assert info.value.code == "UNAVAILABLE"
            assert f"cannot connect to 127.0.0.1:{port}" in info.value.details
        finally:
            await found.stop(None)

    run(main)


def test_a_stream_whose_connection_goes_ends_unavailable(tmp_path: Path):
    async def main() -> None:
        path = tmp_path / "grpc.sock"
        found, _ = await server(f"unix:{path}", secure=False)
        async with Channel(f"unix:{path}") as channel:
            hold = asyncio.Event()
            stream = channel.stream("/test.Echo/Stream", items(b"a", hold=hold), Bytes)
            assert (await anext(stream)).value == b"aa"
            await found.stop(None)
            with pytest.raises(GrpcError) as info:
                await anext(stream)
            assert info.value.code in ("UNAVAILABLE", "CANCELLED")

    run(main)


def test_messages_are_cut_out_however_the_bytes_come():
    wire = frame(Bytes(value=b"one")) + frame(Bytes(value=b"")) + frame(Bytes(value=b"x" * 300))
    for size in (1, 2, 7, len(wire)):
        reframer, out = Reframer(), []
        for start in range(0, len(wire), size):
            out += reframer.feed(wire[start:start + size])
        assert [Bytes.FromString(m).value for m in out] == [b"one", b"", b"x" * 300]
    with pytest.raises(GrpcError, match="compressed"):
        Reframer().feed(b"\x01\x00\x00\x00\x01a")
    with pytest.raises(GrpcError, match="RESOURCE_EXHAUSTED"):
        Reframer().feed(b"\x00\xff\xff\xff\xff")


def test_mutual_tls_over_a_unix_socket_as_through_the_agents_relay():
    async def main() -> None:
        # a short path: this test's tmp_path is past a unix socket's 108 bytes
        folder = tempfile.TemporaryDirectory(prefix="grpc-", dir="/tmp")
        path = Path(folder.name) / "tls.sock"
        found, _ = await server(f"unix:{path}", secure=True)
        try:
            async with Channel(f"unix:{path}", tls(), NAME) as channel:
                answer = await channel.unary("/test.Echo/Unary", Bytes(value=b"hi"), Bytes)
                assert answer.value == b"||hi2"
        finally:
            await found.stop(None)
            folder.cleanup()

    run(main)


def test_a_response_that_does_not_decode_ends_the_call_internal(tmp_path: Path):
    """As gRPC's own clients: the caller gets a GrpcError (an xDS client then reconnects),
    not the codec's exception, with protobuf's types and with ztunnel's protowire ones."""
    from pilotfish.core.ztunnel import discovery_wire

    async def main() -> None:
        path = tmp_path / "grpc.sock"
        found, _ = await server(f"unix:{path}", secure=False)
        try:
            async with Channel(f"unix:{path}") as channel:
                for response_type in (Bytes, discovery_wire.DeltaDiscoveryResponse):
                    with pytest.raises(GrpcError) as info:
                        await channel.unary("/test.Echo/Garbage", Bytes(value=b"x"),
                                            response_type)
                    assert info.value.code == "INTERNAL", info.value.details
                    assert response_type.__name__ in info.value.details
                    with pytest.raises(GrpcError) as info:
                        async for _ in channel.stream("/test.Echo/GarbageStream",
                                                      items(b"x"), response_type):
                            pass
                    assert info.value.code == "INTERNAL", info.value.details
        finally:
            await found.stop(None)

    run(main)
