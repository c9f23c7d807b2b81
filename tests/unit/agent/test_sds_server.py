"""The agent's SDS server over a real unix socket and real gRPC, SotW and delta."""

from __future__ import annotations

import logging
import stat
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import grpc
from cryptography import x509
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc
from google.rpc import status_pb2

from pilotfish.agent.sds_server import SdsServer, secret_resources
from pilotfish.core.security import pki, signing, workload_cert
from pilotfish.core.security.identity import Identity
from pilotfish.core.security.provider import SigningRequest
from pilotfish.core.xds import types

ME = "spiffe://cluster.local/ns/shop/sa/reviews"
NODE = base_pb2.Node(id="sidecar~10.0.0.5~reviews-1.shop~shop.svc.cluster.local")
ROOT, ROOT_KEY = pki.self_signed_root("cluster.local", time.time() - 60)
BUNDLE = pki.make_bundle(ROOT, ROOT_KEY, [], [ROOT])


def new_secret() -> workload_cert.WorkloadSecret:
    key = workload_cert.generate_key()
    csr = x509.load_pem_x509_csr(workload_cert.make_csr(key, ME).encode())
    now = time.time()
    chain = signing.sign_workload(
        BUNDLE, SigningRequest(csr, Identity("shop", "reviews"), ME, 3600.0), now)
    return workload_cert.from_response(chain, key, ME, (), now)


def unpack(resource: Any) -> secret_pb2.Secret:
    secret = secret_pb2.Secret()
    resource.Unpack(secret)
    return secret


class Stream:
    """One SDS stream as Envoy holds it: requests written, responses read by a task (a
    cancelled ``read()`` would cancel the whole gRPC call)."""

    def __init__(self, call: Any, tg: anyio.abc.TaskGroup) -> None:
        self.call = call
        self._send, self._receive = anyio.create_memory_object_stream[Any](16)
        tg.start_soon(self._pump)

    async def _pump(self) -> None:
        async with self._send:
            while (message := await self.call.read()) is not grpc.aio.EOF:
                await self._send.send(message)

    async def write(self, request: Any) -> None:
        await self.call.write(request)

    async def read(self) -> Any:
        return await self._receive.receive()

    async def nothing(self, wait: float = 0.3) -> bool:
        """Whether no response arrives within ``wait`` seconds."""
        with anyio.move_on_after(wait):
            await self._receive.receive()
            return False
        return True

    async def close(self) -> None:
        await self.call.done_writing()


class Client:
    def __init__(self, stub: sds_pb2_grpc.SecretDiscoveryServiceStub,
                 tg: anyio.abc.TaskGroup) -> None:
        self.stub, self.tg = stub, tg

    def sotw(self) -> Stream:
        return Stream(self.stub.StreamSecrets(), self.tg)

    def delta(self) -> Stream:
        return Stream(self.stub.DeltaSecrets(), self.tg)


async def with_server(tmp_path: Path,
                      body: Callable[[SdsServer, Client], Awaitable[None]]) -> None:
    server = SdsServer(tmp_path / "SDS", file_poll=0.1)
    async with anyio.create_task_group() as tg:
        await tg.start(server.serve)
        async with grpc.aio.insecure_channel(f"unix:{server.path}") as channel:
            with anyio.fail_after(10):
                async with anyio.create_task_group() as streams:
                    await body(server, Client(sds_pb2_grpc.SecretDiscoveryServiceStub(channel),
                                              streams))
                    streams.cancel_scope.cancel()
        tg.cancel_scope.cancel()


def sotw(names: list[str], nonce: str = "", version: str = "",
         error: str | None = None) -> discovery_pb2.DiscoveryRequest:
    request = discovery_pb2.DiscoveryRequest(
        node=NODE, type_url=types.SECRET, resource_names=names, response_nonce=nonce,
        version_info=version)
    if error is not None:
        request.error_detail.CopyFrom(status_pb2.Status(code=13, message=error))
    return request


def test_sotw_holds_the_request_until_the_first_certificate_then_pushes_rotations(tmp_path):
    async def body(server: SdsServer, client: Client) -> None:
        call = client.sotw()
        await call.write(sotw(["default"]))
        assert await call.nothing()  # no certificate yet: nothing, not an empty answer
        first = new_secret()
        server.update(secret_resources(first))
        response = await call.read()
        [default] = [unpack(r) for r in response.resources]
        assert default.name == "default"
        assert default.tls_certificate.certificate_chain.inline_bytes.decode() == \
            first.chain_pem
        assert default.tls_certificate.private_key.inline_bytes.decode() == first.key_pem
        assert not server.delivered()
        await call.write(sotw(["default"], response.nonce, response.version_info))
        await server.wait_delivered()
        second = new_secret()
        server.update(secret_resources(second))
        pushed = await call.read()
        assert pushed.version_info != response.version_info
        assert [unpack(r).name for r in pushed.resources] == ["default"]  # ROOTCA unchanged
        assert unpack(pushed.resources[0]).tls_certificate.certificate_chain.inline_bytes \
            .decode() == second.chain_pem
        assert not server.delivered()
        await call.write(sotw(["default"], pushed.nonce, pushed.version_info))
        await server.wait_delivered()
        await call.close()

    anyio.run(with_server, tmp_path, body)


def test_sotw_rootca_is_the_trust_bundle(tmp_path):
    async def body(server: SdsServer, client: Client) -> None:
        server.update(secret_resources(new_secret()))
        call = client.sotw()
        await call.write(sotw(["ROOTCA"]))
        response = await call.read()
        [root] = [unpack(r) for r in response.resources]
        assert root.name == "ROOTCA"
        assert root.validation_context.trusted_ca.inline_bytes.decode() == pki.cert_pem(ROOT)
        await call.close()

    anyio.run(with_server, tmp_path, body)


def test_sotw_unknown_name_gets_no_answer_and_a_log_line(tmp_path, caplog):
    async def body(server: SdsServer, client: Client) -> None:
        server.update(secret_resources(new_secret()))
        call = client.sotw()
        await call.write(sotw(["kubernetes://web-cert"]))
        # Envoy rejects an empty state-of-the-world answer for a secret; none is sent.
        assert await call.nothing()
        await call.close()

    with caplog.at_level(logging.WARNING, "pilotfish.sds"):
        anyio.run(with_server, tmp_path, body)
    assert "asked for secret 'kubernetes://web-cert'; this agent serves only default, " \
           "ROOTCA and certificate files (no answer)" in caplog.text


def test_sotw_nack_is_logged_and_not_resent(tmp_path, caplog):
    async def body(server: SdsServer, client: Client) -> None:
        server.update(secret_resources(new_secret()))
        call = client.sotw()
        await call.write(sotw(["default"]))
        response = await call.read()
        await call.write(sotw(["default"], response.nonce, "", error="Failed to load cert"))
        assert await call.nothing()
        assert not server.delivered()
        await call.close()

    with caplog.at_level(logging.WARNING, "pilotfish.sds"):
        anyio.run(with_server, tmp_path, body)
    assert "rejected the secrets: Failed to load cert" in caplog.text


def test_delta_sends_both_and_reports_unknown_names_as_not_found(tmp_path, caplog):
    async def body(server: SdsServer, client: Client) -> None:
        call = client.delta()
        await call.write(discovery_pb2.DeltaDiscoveryRequest(
            node=NODE, type_url=types.SECRET,
            resource_names_subscribe=["default", "ROOTCA", "kubernetes://other"]))
        assert await call.nothing()  # held, not "not found", until the certificate
        server.update(secret_resources(new_secret()))
        response = await call.read()
        assert sorted(r.name for r in response.resources) == ["ROOTCA", "default"]
        assert list(response.removed_resources) == ["kubernetes://other"]
        await call.write(discovery_pb2.DeltaDiscoveryRequest(
            type_url=types.SECRET, response_nonce=response.nonce))
        await server.wait_delivered()
        server.update(secret_resources(new_secret()))
        pushed = await call.read()
        assert [r.name for r in pushed.resources] == ["default"]
        assert not pushed.removed_resources  # "not found" is said once
        await call.close()

    with caplog.at_level(logging.WARNING, "pilotfish.sds"):
        anyio.run(with_server, tmp_path, body)
    assert "'kubernetes://other'; this agent serves only default, ROOTCA and certificate " \
           "files (answered as not found)" in caplog.text


def test_socket_is_private_to_the_agents_user_and_removed_on_exit(tmp_path):
    path = tmp_path / "SDS"
    path.write_text("left over by a killed agent")

    async def body(server: SdsServer, client: Client) -> None:
        mode = path.stat().st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600

    anyio.run(with_server, tmp_path, body)
    assert not path.exists()


def write_pair(directory: Path, name: str = "gw") -> tuple[Path, Path]:
    """A certificate and its key, as an operator mounts them for a gateway."""
    cert, key = pki.self_signed_root(f"{name}.example.com", time.time() - 60)
    directory.mkdir(exist_ok=True)
    (directory / f"{name}.pem").write_text(pki.cert_pem(cert))
    (directory / f"{name}.key").write_text(pki.key_pem(key))
    return directory / f"{name}.pem", directory / f"{name}.key"


def test_certificate_files_are_served_when_they_appear_and_when_they_change(tmp_path, caplog):
    certs = tmp_path / "certs"
    name = f"file-cert:{certs}/gw.pem~{certs}/gw.key"

    async def body(server: SdsServer, client: Client) -> None:
        call = client.sotw()
        await call.write(sotw([name]))
        assert await call.nothing()  # not there yet: the listener waits
        chain, key = write_pair(certs)
        response = await call.read()
        [secret] = [unpack(r) for r in response.resources]
        assert secret.name == name
        assert secret.tls_certificate.certificate_chain.inline_bytes == chain.read_bytes()
        assert secret.tls_certificate.private_key.inline_bytes == key.read_bytes()
        await call.write(sotw([name], response.nonce, response.version_info))
        write_pair(certs)  # rotated in place
        rotated = await call.read()
        assert unpack(rotated.resources[0]).tls_certificate.certificate_chain.inline_bytes \
            == chain.read_bytes() != secret.tls_certificate.certificate_chain.inline_bytes
        await call.write(sotw([name], rotated.nonce, rotated.version_info))
        chain.write_text("half a file")  # gone bad: the last good version stays served
        assert await call.nothing()
        await call.close()

    with caplog.at_level(logging.INFO, "pilotfish.sds"):
        anyio.run(with_server, tmp_path, body)
    assert f"cannot serve {name}: {certs}/gw.pem: not there" in caplog.text
    assert "holds no PEM certificate (the last good version stays served)" in caplog.text


def test_a_trust_bundle_file_is_served_and_other_files_are_refused(tmp_path, caplog):
    chain, _ = write_pair(tmp_path / "certs")
    secret_file = tmp_path / "shadow"
    secret_file.write_text("root:$6$salt$hash:19000:0:99999:7:::\n")

    async def body(server: SdsServer, client: Client) -> None:
        call = client.sotw()
        await call.write(sotw([f"file-root:{chain}", f"file-root:{secret_file}",
                               f"file-cert:{chain}~{secret_file}"]))
        response = await call.read()
        [root] = [unpack(r) for r in response.resources]
        assert root.name == f"file-root:{chain}"
        assert root.validation_context.trusted_ca.inline_bytes == chain.read_bytes()
        assert await call.nothing()
        await call.close()

    with caplog.at_level(logging.WARNING, "pilotfish.sds"):
        anyio.run(with_server, tmp_path, body)
    assert f"{secret_file}: holds no PEM certificate" in caplog.text
    assert f"{secret_file}: not a PEM private key" in caplog.text
