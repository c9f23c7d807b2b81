"""echo-basic's gRPC mode (``GRPC_ECHO_SERVER``): the suite's ``GrpcEcho`` service.

``gateway_api_conformance.echo_basic.grpcecho.GrpcEcho``: ``Echo`` and ``EchoTwo`` answer
with assertions (the fully qualified method, the request's metadata, the pod's context,
the TLS connection); ``EchoThree`` is unimplemented on purpose. Plaintext on ``HTTP_PORT``
(3000), TLS on ``HTTPS_PORT`` (8443) with ``TLS_SERVER_CERT`` and ``TLS_SERVER_PRIV_KEY``.

The messages are built at start from a descriptor written here, field for field as the
suite's ``grpcecho.proto``, so no generated module is shipped.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PACKAGE = "gateway_api_conformance.echo_basic.grpcecho"
SERVICE = f"{PACKAGE}.GrpcEcho"
_STRING = descriptor_pb2.FieldDescriptorProto.TYPE_STRING
_MESSAGE = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
_REPEATED = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
_OPTIONAL = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
# message → [(field, number, type, repeated)]; a message type names the message.
_MESSAGES: dict[str, list[tuple[str, int, Any, bool]]] = {
    "Header": [("key", 1, _STRING, False), ("value", 2, _STRING, False)],
    "Context": [("namespace", 1, _STRING, False), ("ingress", 2, _STRING, False),
                ("service_name", 3, _STRING, False), ("pod", 4, _STRING, False)],
    "TLSAssertions": [("version", 1, _STRING, False), ("negotiated_protocol", 2, _STRING, False),
                      ("server_name", 3, _STRING, False), ("cipher_suite", 4, _STRING, False),
                      ("peer_certificates", 5, _STRING, True)],
    "Assertions": [("fully_qualified_method", 1, _STRING, False),
                   ("headers", 2, "Header", True), ("authority", 3, _STRING, False),
                   ("context", 4, "Context", False),
                   ("tls_assertions", 5, "TLSAssertions", False)],
    "EchoRequest": [],
    "EchoResponse": [("assertions", 1, "Assertions", False),
                     ("request", 2, "EchoRequest", False)],
}


def messages() -> dict[str, Any]:
    """The proto's message classes, by short name."""
    proto = descriptor_pb2.FileDescriptorProto(name="grpcecho.proto", package=PACKAGE,
                                               syntax="proto3")
    for name, fields in _MESSAGES.items():
        message = proto.message_type.add(name=name)
        for field, number, kind, repeated in fields:
            added = message.field.add(name=field, number=number,
                                      label=_REPEATED if repeated else _OPTIONAL)
            if isinstance(kind, str):
                added.type = _MESSAGE
                added.type_name = f".{PACKAGE}.{kind}"
            else:
                added.type = kind
    service = proto.service.add(name="GrpcEcho")
    for method in ("Echo", "EchoTwo", "EchoThree"):
        service.method.add(name=method, input_type=f".{PACKAGE}.EchoRequest",
                           output_type=f".{PACKAGE}.EchoResponse")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    classes = message_factory.GetMessages([proto], pool=pool)
    return {name: classes[f"{PACKAGE}.{name}"] for name in _MESSAGES}


class EchoService:
    def __init__(self, env: Mapping[str, str], tls: bool) -> None:
        self.types = messages()
        self.tls = tls
        self.context = self.types["Context"](
            namespace=env.get("NAMESPACE", ""), ingress=env.get("INGRESS_NAME", ""),
            service_name=env.get("SERVICE_NAME", ""), pod=env.get("POD_NAME", ""))

    def handler(self) -> grpc.GenericRpcHandler:
        request, response = self.types["EchoRequest"], self.types["EchoResponse"]

        def method(name: str) -> grpc.RpcMethodHandler:
            async def call(message: Any, context: grpc.aio.ServicerContext) -> Any:
                return self.answer(name, message, context)

            return grpc.unary_unary_rpc_method_handler(
                call, request_deserializer=request.FromString,
                response_serializer=response.SerializeToString)

        # EchoThree stays out: gRPC answers UNIMPLEMENTED, as the suite expects.
        return grpc.method_handlers_generic_handler(
            SERVICE, {"Echo": method("Echo"), "EchoTwo": method("EchoTwo")})

    def answer(self, name: str, message: Any, context: grpc.aio.ServicerContext) -> Any:
        types = self.types
        headers = [types["Header"](key=str(k), value=v if isinstance(v, str) else v.hex())
                   for k, v in context.invocation_metadata() or ()]
        authority = next((h.value for h in headers if h.key == ":authority"), "")
        assertions = types["Assertions"](
            fully_qualified_method=f"/{SERVICE}/{name}", headers=headers,
            authority=authority, context=self.context)
        if self.tls:
            # gRPC's auth context tells the peer's certificate, not the TLS version, cipher
            # or SNI: those stay empty (the suite checks none of them over gRPC).
            auth = context.auth_context()
            assertions.tls_assertions.CopyFrom(types["TLSAssertions"](
                negotiated_protocol="h2",
                peer_certificates=[c.decode() for c in auth.get("x509_pem_cert", ())]))
        return types["EchoResponse"](assertions=assertions, request=message)


async def serve(env: Mapping[str, str]) -> None:
    port = int(env.get("HTTP_PORT") or 3000)
    servers = []
    plain = grpc.aio.server()
    plain.add_generic_rpc_handlers((EchoService(env, tls=False).handler(),))
    plain.add_insecure_port(f"0.0.0.0:{port}")
    servers.append(plain)
    print(f"plaintext server listening at 0.0.0.0:{port}", flush=True)
    cert, key = env.get("TLS_SERVER_CERT", ""), env.get("TLS_SERVER_PRIV_KEY", "")
    if cert and key:
        secure_port = int(env.get("HTTPS_PORT") or 8443)
        credentials = grpc.ssl_server_credentials(
            [(Path(key).read_bytes(), Path(cert).read_bytes())])
        secure = grpc.aio.server()
        secure.add_generic_rpc_handlers((EchoService(env, tls=True).handler(),))
        secure.add_secure_port(f"0.0.0.0:{secure_port}", credentials)
        servers.append(secure)
        print(f"secure server listening at 0.0.0.0:{secure_port}", flush=True)
    for server in servers:
        await server.start()
    try:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                break
    finally:
        with anyio.CancelScope(shield=True):
            for server in servers:
                await server.stop(grace=1)


def main(env: Mapping[str, str]) -> int:
    try:
        anyio.run(serve, env)
    except OSError as exc:
        print(f"failed to serve: {exc}", flush=True)
        return 1
    return 0
