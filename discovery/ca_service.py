"""``istio.v1.auth.IstioCertificateService/CreateCertificate``: the CA's gRPC API.

``create_certificate`` is the whole decision over data (caller, request, time → chain or
refusal); the servicer around it only reads credentials off the call and maps refusals to
gRPC status codes. Nothing a caller sends can stop discovery: anything unexpected becomes
``INTERNAL`` for that call and a logged traceback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import grpc
from google.protobuf import json_format

from pilotfish.core.security import ca_pb2, ca_pb2_grpc, signing
from pilotfish.core.security.identity import Identity
from pilotfish.core.security.provider import (
    CertError,
    CertProvider,
    CertSettings,
    Refusal,
    SigningRequest,
)
from pilotfish.discovery.authn import Authenticator, Credentials
from pilotfish.discovery.tls_front import TlsPeer

log = logging.getLogger("pilotfish.ca")

STATUS = {refusal: getattr(grpc.StatusCode, refusal.value) for refusal in Refusal}
# (gRPC peer string) → the TLS client behind it: its address and verified certificate.
PeerLookup = Callable[[str], TlsPeer | None]


def create_certificate(provider: CertProvider, settings: CertSettings, caller: Identity,
                       csr_pem: str, validity: float, metadata: Mapping[str, Any],
                       now: float) -> list[str]:
    """The chain for an authenticated caller's CSR, or ``CertError``."""
    if metadata.get("ImpersonatedIdentity"):
        raise CertError(Refusal.PERMISSION_DENIED,
                        "ImpersonatedIdentity is not allowed: no node agent is trusted to "
                        "ask for other workloads' certificates")
    spiffe_id = caller.spiffe_id(settings.trust_domain)
    csr, ttl = signing.check_request(csr_pem, spiffe_id, validity, settings)
    return provider.sign(SigningRequest(csr, caller, spiffe_id, ttl, dict(metadata)), now)


class CertificateService(ca_pb2_grpc.IstioCertificateServiceServicer):
    def __init__(self, provider: CertProvider, settings: CertSettings,
                 authenticator: Authenticator, peers: PeerLookup,
                 clock: Callable[[], float] = time.time) -> None:
        self.provider = provider
        self.settings = settings
        self.authenticator = authenticator
        self.peers = peers
        self.clock = clock
        self.signed = 0
        self.refused = 0

    def add_to(self, server: grpc.aio.Server) -> None:
        ca_pb2_grpc.add_IstioCertificateServiceServicer_to_server(self, server)

    async def CreateCertificate(  # the RPC's name, as the generated base class has it
        self, request: ca_pb2.IstioCertificateRequest, context: grpc.aio.ServicerContext
    ) -> ca_pb2.IstioCertificateResponse:
        now = self.clock()
        peer = self.peers(context.peer())
        where = peer.address if peer else context.peer()
        credentials = Credentials.from_metadata(context.invocation_metadata(),
                                                peer.certificate if peer else None)
        try:
            caller = await self.authenticator.authenticate_async(credentials, now)
            metadata = json_format.MessageToDict(request.metadata)
            chain = create_certificate(self.provider, self.settings, caller, request.csr,
                                       request.validity_duration, metadata, now)
        except CertError as exc:
            self.refused += 1
            log.warning("CreateCertificate from %s refused (%s): %s", where,
                        exc.refusal.value, exc)
            await context.abort(STATUS[exc.refusal], str(exc))
            raise AssertionError("abort returned") from None  # abort always raises
        except Exception as exc:
            self.refused += 1
            log.exception("CreateCertificate from %s failed", where)
            await context.abort(grpc.StatusCode.INTERNAL, f"CSR signing error ({exc})")
            raise AssertionError("abort returned") from None
        self.signed += 1
        pod = f"pod {caller.pod}, " if caller.pod else ""  # a certificate names no pod
        log.info("signed a certificate for %s (%sproven by %s, ttl %gs)",
                 caller.spiffe_id(self.settings.trust_domain), pod, caller.source,
                 signing.resolve_ttl(request.validity_duration, self.settings))
        return ca_pb2.IstioCertificateResponse(cert_chain=chain)
