"""AuthorizationPolicy ``when`` keys → the matcher each value becomes.

Conditions on the destination (its address, port, the SNI the client asked for) join the
rule's permission; all others describe the caller and join its principal. Keys that only
HTTP requests carry are marked so, for the TCP translation. ``experimental.*`` keys name
Istio-proxy extensions stock Envoy does not have: `condition` returns None for them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from typing import Any

import attrs

from pilotfish.translators import rbac_matchers as m

_INDEXED = re.compile(r"\A(request\.headers|request\.auth\.claims)((?:\[[^\[\]]+\])+)\Z")


@attrs.frozen
class Condition:
    build: Callable[[str], Any]
    permission: bool = False  # joins the permission (destination) rather than the principal
    http_only: bool = False


_PLAIN: dict[str, Condition] = {
    "source.ip": Condition(m.ip_block),
    "remote.ip": Condition(partial(m.ip_block, remote=True)),
    "source.namespace": Condition(m.namespace),
    "source.principal": Condition(m.principal),
    "source.serviceAccount": Condition(m.service_account),
    "source.trustDomain": Condition(m.trust_domain),
    "request.auth.principal": Condition(m.request_principal, http_only=True),
    "request.auth.audiences": Condition(partial(m.claim, ("aud",)), http_only=True),
    "request.auth.presenter": Condition(partial(m.claim, ("azp",)), http_only=True),
    "destination.ip": Condition(m.destination_ip, permission=True),
    "destination.port": Condition(m.port, permission=True),
    "connection.sni": Condition(m.server_name, permission=True),
}


def condition(key: str) -> Condition | None:
    """The translation of a ``when`` key, or None when pilotfish has none."""
    found = _PLAIN.get(key)
    if found is not None:
        return found
    indexed = _INDEXED.match(key)
    if indexed is None:
        return None
    names = tuple(re.findall(r"\[([^\[\]]+)\]", indexed.group(2)))
    if indexed.group(1) == "request.headers":
        if len(names) != 1:
            return None
        return Condition(partial(m.header_principal, names[0]), http_only=True)
    # request.auth.claims[a][b]: a nested claim, one path segment per index.
    return Condition(partial(m.claim, names), http_only=True)
