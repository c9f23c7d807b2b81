"""SDS over ADS: the Secrets ``credentialName`` names, served as istiod serves them.

A Gateway server or DestinationRule with ``credentialName: NAME`` sends its proxy to SDS
resource ``kubernetes://NAME`` (and ``kubernetes://NAME-cacert`` for a CA) over the proxy's
ADS stream (`upstream_tls.credential_sds`). This generator answers those names from the
Secret objects in the proxy's own namespace (`core/security/credentials.py` says which
layouts), and only to proxies discovery authenticated on 15012: a plaintext 15010 stream
gets no secrets at all, and no proxy gets another namespace's.
"""

from __future__ import annotations

import logging
from typing import Any

from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

from pilotfish.core.hookspecs import hookimpl
from pilotfish.core.proxy import Proxy
from pilotfish.core.push_context import PushContext
from pilotfish.core.security import credentials
from pilotfish.core.xds import types

log = logging.getLogger("pilotfish.sds")


class CredentialSecrets:
    type_url = types.SECRET
    proxy_kinds = frozenset({"sidecar", "router"})
    depends_on = frozenset({"Secret"})
    authenticated_only = True  # see core/xds/generator.py

    def generate(self, push: PushContext, proxy: Proxy, memo: dict[Any, Any]
                 ) -> list[secret_pb2.Secret]:
        key = ("namespace", proxy.namespace)
        if key not in memo:
            memo[key] = credentials.sds_secrets(_credentials(push, proxy.namespace))
        return list(memo[key])


def _credentials(push: PushContext, namespace: str) -> list[tuple[str, credentials.Credential]]:
    out = []
    for secret in push.objects("Secret"):
        if secret.namespace != namespace:
            continue
        try:
            found = credentials.credential(secret.body)
        except credentials.CredentialError as exc:  # validation refuses these
            log.warning("Secret %s/%s: %s; not served", secret.namespace, secret.name, exc)
            continue
        if found is not None:
            out.append((secret.name, found))
    return out


@hookimpl
def pilotfish_xds_generator() -> CredentialSecrets:
    return CredentialSecrets()
