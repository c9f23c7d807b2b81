"""The agent's side of ``istio.v1.auth.IstioCertificateService/CreateCertificate``.

One call per certificate, on a channel made for it: TLS to discovery (15012), checked
against the root in ``--root-cert`` and the name discovery's serving certificate carries
(Istio's ``istiod.istio-system.svc``, whatever address is dialled). The caller proves who
it is with what it has:

* the pod token (``authorization: Bearer``), read from ``--token-file`` on every call
  because the node may rotate it;
* once it holds a valid workload certificate, that certificate as the TLS client
  certificate (discovery tries it first; it is how a pod renews after its token expired).

A node agent (ztunnel) asks for the identities of the workloads on its node the same way,
naming one in ``impersonate``: the request carries metadata ``ImpersonatedIdentity`` and is
proven by the agent's own pod token alone (a certificate held for that workload would make
the caller that workload; discovery needs the agent's pod to know its node).

A channel per call costs a handshake every twelve hours or so and means a renewed
certificate is used from the next call on, with no channel state to keep right. The call
goes over the native proxy's own gRPC client (``core/native/grpc_client``): ztunnel asks
for every identity on its node and must not carry grpcio's runtime for it.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from pilotfish.core.native.grpc_client import Channel, GrpcError, client_tls
from pilotfish.core.security import ca_wire

if TYPE_CHECKING:  # ztunnel holds NodeSecrets and must not load cryptography for the type
    from pilotfish.core.security.node_secret import NodeSecret
    from pilotfish.core.security.workload_cert import WorkloadSecret

log = logging.getLogger("pilotfish.ca_client")

SERVER_NAME = "istiod.istio-system.svc"  # discovery's serving certificate (Istio's PILOT_SAN)
CALL_TIMEOUT = 10.0  # Istio's agent gives a credential fetch 10 s in all
IMPERSONATED_IDENTITY = "ImpersonatedIdentity"  # Istio's CSR metadata key
METHOD = "/istio.v1.auth.IstioCertificateService/CreateCertificate"


class CaError(Exception):
    """A request for a certificate failed; the message says where and why."""


async def read_text(path: Path, what: str) -> str:
    # Read in place: a token or a root bundle is a few KiB of a local file, and a worker
    # thread for it (anyio.Path's) stays in ztunnel's process with a stack and a malloc
    # arena of its own.
    try:
        return path.read_text()
    except OSError as exc:
        raise CaError(f"cannot read the {what} {path}: {exc.strerror or exc}") from exc


@attrs.frozen
class CaClient:
    address: str  # HOST:PORT of discovery's CA
    root_cert: Path  # PEM roots that discovery's serving certificate must chain to
    token_file: Path | None = None
    server_name: str = SERVER_NAME
    timeout: float = CALL_TIMEOUT

    async def credentials(self, holding: WorkloadSecret | NodeSecret | None, now: float
                          ) -> tuple[ssl.SSLContext, list[tuple[str, str]]]:
        """TLS context and call metadata for one request."""
        roots = await read_text(self.root_cert, "root certificate (--root-cert)")
        metadata: list[tuple[str, str]] = []
        token_problem = ""
        if self.token_file is not None:
            try:
                token = (await read_text(self.token_file, "pod token (--token-file)")).strip()
            except CaError as exc:
                token, token_problem = "", str(exc)
            if token:
                metadata.append(("authorization", f"Bearer {token}"))
            elif not token_problem:
                token_problem = f"the pod token file {self.token_file} is empty"
        client = holding is not None and holding.leaf.valid_at(now)
        if not metadata and not client:
            raise CaError(token_problem or "no credentials: give --token-file (the pod token)"
                          " or hold a valid workload certificate")
        if token_problem:
            log.info("%s; renewing with the current certificate alone", token_problem)
        try:
            if client and holding is not None:
                context = client_tls(roots.encode(), holding.chain_pem.encode(),
                                     holding.key_pem.encode())
            else:
                context = client_tls(roots.encode())
        except ssl.SSLError as exc:
            raise CaError(f"the root certificate (--root-cert) {self.root_cert} or the "
                          f"workload certificate cannot be used: {exc}") from exc
        return context, metadata

    async def create_certificate(self, csr_pem: str, ttl: float,
                                 holding: WorkloadSecret | NodeSecret | None, now: float,
                                 impersonate: str = "") -> list[str]:
        """The CA's ``cert_chain`` (leaf first, root bundle last) for ``csr_pem``; with
        ``impersonate`` (a SPIFFE ID), for that identity, as a node agent asks for the
        workloads of its node (then ``holding`` is not used: the pod token proves the
        agent)."""
        if impersonate and self.token_file is None:
            raise CaError(f"asking for {impersonate} as a node agent needs the agent's pod "
                          "token (--token-file)")
        context, metadata = await self.credentials(None if impersonate else holding, now)
        request = ca_wire.IstioCertificateRequest(
            csr=csr_pem, validity_duration=int(ttl),
            metadata=ca_wire.Struct(fields={
                IMPERSONATED_IDENTITY: ca_wire.Value(string_value=impersonate)})
            if impersonate else None)
        try:
            async with Channel(self.address, context, self.server_name) as channel:
                response = await channel.unary(METHOD, request,
                                               ca_wire.IstioCertificateResponse, metadata,
                                               timeout=self.timeout)
        except GrpcError as exc:
            raise CaError(f"CreateCertificate at {self.address}: {exc.code}: "
                          f"{exc.details}") from exc
        return list(response.cert_chain)
