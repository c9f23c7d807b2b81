"""SDS over ADS: the Secrets ``credentialName`` names, served as istiod serves them.

A Gateway server or DestinationRule with ``credentialName: NAME`` sends its proxy to SDS
resource ``kubernetes://NAME`` (and ``kubernetes://NAME-cacert`` for a CA) over the proxy's
ADS stream (`upstream_tls.credential_sds`). This generator answers those names from the
Secret objects in the proxy's own namespace (`core/security/credentials.py` says which
layouts), and only to proxies discovery authenticated on 15012: a plaintext 15010 stream
gets no secrets at all, and no proxy gets another namespace's, except a Gateway API
Gateway's certificate that a ReferenceGrant lets it read (``kubernetes-gateway://NS/NAME``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

from pilotfish.core.gateway_api import SECRET_REF
from pilotfish.core.gateway_api.backend_tls import CONFIGMAP_REF
from pilotfish.core.hookspecs import hookimpl
from pilotfish.core.objects import ConfigObject
from pilotfish.core.proxy import Proxy
from pilotfish.core.push_context import PushContext
from pilotfish.core.security import credentials
from pilotfish.core.xds import types

log = logging.getLogger("pilotfish.sds")


class CredentialSecrets:
    type_url = types.SECRET
    proxy_kinds = frozenset({"sidecar", "router"})
    # Gateway API Gateways and ReferenceGrants say which other namespaces' Secrets a
    # gateway may read.
    depends_on = frozenset({"Secret", "Gateway", "ReferenceGrant", "ConfigMap",
                            "BackendTLSPolicy"})
    authenticated_only = True  # see core/xds/generator.py

    def generate(self, push: PushContext, proxy: Proxy, memo: dict[Any, Any]
                 ) -> list[secret_pb2.Secret]:
        key = ("namespace", proxy.namespace)
        if key not in memo:
            own = _credentials(push, lambda s: s.namespace == proxy.namespace)
            # Certificates of Gateway API Gateways in this namespace, elsewhere by grant.
            granted = {(ns, name) for gw_ns, ns, name in push.gateway_api.granted_secrets
                       if gw_ns == proxy.namespace}
            others = _credentials(push, lambda s: (s.namespace, s.name) in granted)
            memo[key] = [*credentials.sds_secrets((s.name, c) for s, c in own),
                         *_trusted_configmaps(push),
                         *credentials.sds_secrets(
                [(f"{secret.namespace}/{secret.name}", found) for secret, found in others],
                prefix=SECRET_REF)]
        return list(memo[key])


def _trusted_configmaps(push: PushContext) -> list[secret_pb2.Secret]:
    """The CA bundles BackendTLSPolicies trust (public certificates, any namespace's), as
    ``configmap://NAMESPACE/NAME``."""
    wanted = push.gateway_api.trusted_configmaps
    out = []
    for configmap in push.objects("ConfigMap"):
        if (configmap.namespace, configmap.name) not in wanted:
            continue
        bundle = str((configmap.body.get("data") or {}).get("ca.crt") or "").encode()
        name = f"{CONFIGMAP_REF}{configmap.namespace}/{configmap.name}"
        out += [secret for secret in credentials.sds_secrets(
            [(name, credentials.Credential(ca=bundle))], prefix="") if secret.name == name]
    return out


def _credentials(push: PushContext, wanted: Callable[[ConfigObject], bool]
                 ) -> list[tuple[ConfigObject, credentials.Credential]]:
    out = []
    for secret in push.objects("Secret"):
        if not wanted(secret):
            continue
        try:
            found = credentials.credential(secret.body)
        except credentials.CredentialError as exc:  # validation refuses these
            log.warning("Secret %s/%s: %s; not served", secret.namespace, secret.name, exc)
            continue
        if found is not None:
            out.append((secret, found))
    return out


@hookimpl
def pilotfish_xds_generator() -> CredentialSecrets:
    return CredentialSecrets()
