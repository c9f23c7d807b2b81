"""Workload certificates for tests that need real mTLS between mesh identities (HBONE,
ztunnel): a root made and used the way pilotfish's own CA makes and uses one
(``pki.self_signed_root``, ``signing.sign_workload``), without running discovery.
"""

from __future__ import annotations

import time

import attrs
from cryptography import x509

from pilotfish.core.security import pki, signing, workload_cert
from pilotfish.core.security.identity import Identity
from pilotfish.core.security.provider import SigningRequest


@attrs.frozen
class WorkloadCert:
    spiffe_id: str
    chain_pem: bytes  # leaf first, then the root, as the CA answers
    key_pem: bytes


class MeshCA:
    """A mesh root for ``trust_domain`` that signs SPIFFE workload certificates."""

    def __init__(self, trust_domain: str = "cluster.local") -> None:
        self.trust_domain = trust_domain
        root, key = pki.self_signed_root(trust_domain, time.time() - 60)
        self.bundle = pki.make_bundle(root, key, [], [root])

    @property
    def roots_pem(self) -> bytes:
        return self.bundle.roots_pem.encode()

    def spiffe(self, namespace: str, service_account: str) -> str:
        return workload_cert.spiffe_id(self.trust_domain, namespace, service_account)

    def issue(self, namespace: str, service_account: str, ttl: float = 3600.0
              ) -> WorkloadCert:
        """A certificate for ``spiffe://TD/ns/NAMESPACE/sa/SERVICE_ACCOUNT`` and its key."""
        spiffe = self.spiffe(namespace, service_account)
        key = workload_cert.generate_key()
        chain = self.sign_csr(workload_cert.make_csr(key, spiffe), spiffe, ttl)
        return WorkloadCert(spiffe, "".join(chain).encode(),
                            workload_cert.key_pem(key).encode())

    def sign_csr(self, csr_pem: str, spiffe_id: str, ttl: float = 3600.0) -> list[str]:
        """The CA's ``cert_chain`` answer (leaf, then the root) for a CSR of ``spiffe_id``."""
        namespace, account = spiffe_id.split("/ns/", 1)[1].split("/sa/", 1)
        csr = x509.load_pem_x509_csr(csr_pem.encode())
        return signing.sign_workload(self.bundle, SigningRequest(
            csr, Identity(namespace, account), spiffe_id, ttl), time.time())
