"""``istio.v1.auth.IstioCertificateService/CreateCertificate``: the CA's gRPC API.

``create_certificate`` is the whole decision over data (caller, request, pods, time → chain
or refusal); the servicer around it only reads credentials off the call, hands it the pods
discovery knows (for a node agent's ``ImpersonatedIdentity``, `node_authz`) and maps refusals
to gRPC status codes. Nothing a caller sends can stop discovery: anything unexpected becomes
``INTERNAL`` for that call and a logged traceback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

import grpc
from google.protobuf import json_format

from pilotfish.core.objects import ConfigObject
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
from pilotfish.discovery.node_authz import (
    IMPERSONATED_IDENTITY,
    TRUSTED_NODE_ACCOUNTS,
    authorize_impersonation,
)
from pilotfish.discovery.tls_front import TlsPeer

log = logging.getLogger("pilotfish.ca")

STATUS = {refusal: getattr(grpc.StatusCode, refusal.value) for refusal in Refusal}
# (gRPC peer string) → the TLS client behind it: its address and verified certificate.
PeerLookup = Callable[[str], TlsPeer | None]
# The pods discovery knows now (its config store's), read for each impersonating request.
PodSource = Callable[[], Iterable[ConfigObject]]


def create_certificate(provider: CertProvider, settings: CertSettings, caller: Identity,
                       csr_pem: str, validity: float, metadata: Mapping[str, Any],
                       now: float, pods: Iterable[ConfigObject] = (),
                       trusted: Collection[str] = TRUSTED_NODE_ACCOUNTS) -> list[str]:
    """The chain for an authenticated caller's CSR, or ``CertError``: for the caller's own
    identity, or for the ``ImpersonatedIdentity`` a node agent may have (``pods`` say where
    each runs)."""
    identity = caller
    impersonated = metadata.get(IMPERSONATED_IDENTITY)
    if impersonated:
        identity = authorize_impersonation(caller, str(impersonated), settings.trust_domain,
                                           pods, trusted)
    spiffe_id = identity.spiffe_id(settings.trust_domain)
    csr, ttl = signing.check_request(csr_pem, spiffe_id, validity, settings)
    return provider.sign(SigningRequest(csr, identity, spiffe_id, ttl, dict(metadata)), now)


class CertificateService(ca_pb2_grpc.IstioCertificateServiceServicer):
    def __init__(self, provider: CertProvider, settings: CertSettings,
                 authenticator: Authenticator, peers: PeerLookup,
                 clock: Callable[[], float] = time.time, pods: PodSource = tuple,
                 trusted_node_accounts: Collection[str] = TRUSTED_NODE_ACCOUNTS) -> None:
        self.provider = provider
        self.pods = pods
        self.trusted_node_accounts = trusted_node_accounts
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
            pods = self.pods() if metadata.get(IMPERSONATED_IDENTITY) else ()
            chain = create_certificate(self.provider, self.settings, caller, request.csr,
                                       request.validity_duration, metadata, now, pods,
                                       self.trusted_node_accounts)
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
        impersonated = metadata.get(IMPERSONATED_IDENTITY)
        log.info("signed a certificate for %s (%sproven by %s%s, ttl %gs)",
                 impersonated or caller.spiffe_id(self.settings.trust_domain), pod,
                 caller.source,
                 f", for node agent {caller.spiffe_id(self.settings.trust_domain)}"
                 if impersonated else "",
                 signing.resolve_ttl(request.validity_duration, self.settings))
        return ca_pb2.IstioCertificateResponse(cert_chain=chain)
