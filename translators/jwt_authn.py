"""RequestAuthentication → Envoy's ``jwt_authn`` HTTP filter.

Each ``jwtRules`` entry of each RequestAuthentication selecting the workload becomes one
provider. A request passes the filter when one provider validates its token or when it
carries no token at all (Istio's semantics: an invalid token is refused with 401, a missing
one is left to AuthorizationPolicy, whose ``requestPrincipals`` then match nothing).

Every provider writes the validated payload under one dynamic-metadata key
(`PAYLOAD_KEY` of filter ``envoy.filters.http.jwt_authn``); the RBAC matchers read
``iss``/``sub`` and claims there. Stock Envoy has no ``istio_authn`` filter to copy the
principal elsewhere, so this key is the contract between the two translators.

Keys: ``jwks`` inline, or ``jwksUri: file:///path`` read when the policy is translated
(discovery's file system; edit the policy to pick up a new file). Discovery fetches nothing
over the network and Envoy only fetches from a cluster, so an ``http(s)`` URI, an unreadable
file or a malformed key set gives the provider a key set that matches no token: tokens of
that issuer are refused (401) and a warning names the policy, as Istio does when it cannot
fetch keys.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import empty_pb2

from pilotfish.core.files import ReadError, read_regular
from pilotfish.core.objects import ConfigObject
from pilotfish.translators.common import pack

log = logging.getLogger("pilotfish.lds")

JWT_FILTER = "envoy.filters.http.jwt_authn"
PAYLOAD_KEY = "payload"
FILE_SCHEME = "file://"
MAX_JWKS_BYTES = 1 << 20  # a key set is a few KiB; anything past 1 MiB is not one

# A key set whose private key was discarded when it was made: it verifies no token.
_NO_KEYS = json.dumps({"keys": [{
    "kty": "RSA", "alg": "RS256", "use": "sig", "kid": "pilotfish-no-keys", "e": "AQAB",
    "n": "4DT5Ma4DHSgJRziXwxqchgJPiZvhVLixCAgSXaPHnMSqwgFw0qBA9A8HQspYWLNo8ssBSUlmuws6rLkUFq"
         "MGvL-b_wlDMDHXbAQrWDbbEtd9ozQAyeaVIPCfMV1_dElhfdyRHh3bsluv1p5-h5S2yl3FeJyie74nq3M_"
         "5GKJu5tMz5Zme8Qqe_GvSFJ26I1L82FNIh2ktRwfAlylmjG7Whga2d-aK73SKSonxBNdRe9UP8Fifotwrtq"
         "1ekGtQLL4JRXA9BXptejoG0u63K6nUJNU_jc0kSxjiwwc8B99xxeKTN1WIVi3_eisjPphZEWQ877ZIh2eb"
         "2kh4Q9Ywz3c-w",
}]})


def _valid_jwks(text: str) -> bool:
    try:
        keys = json.loads(text)
    except ValueError:
        return False
    return isinstance(keys, dict) and isinstance(keys.get("keys"), list) and bool(keys["keys"])


def jwks_text(rule: Mapping[str, Any], where: str) -> str:
    """The key set of one rule as JSON text (see the module docstring for the fallback)."""
    inline = str(rule.get("jwks") or "")
    uri = str(rule.get("jwksUri") or "")
    if inline:
        text, source = inline, "jwks"
    elif uri.startswith(FILE_SCHEME):
        try:
            # Read during a push: a FIFO or a device here must not stall or sink discovery.
            data = read_regular(uri[len(FILE_SCHEME):], MAX_JWKS_BYTES, follow=True)
            text, source = data.decode("utf-8"), uri
        except (OSError, ReadError, UnicodeDecodeError) as error:
            log.warning("%s: jwksUri %s: %s; tokens of this issuer will be refused",
                        where, uri, getattr(error, "strerror", None) or error)
            return _NO_KEYS
    elif uri:
        log.warning("%s: jwksUri %s is not fetched (pilotfish reads jwks inline or from a "
                    "file:// URI); tokens of this issuer will be refused", where, uri)
        return _NO_KEYS
    else:
        log.warning("%s: neither jwks nor jwksUri; tokens of this issuer will be refused",
                    where)
        return _NO_KEYS
    if not _valid_jwks(text):
        log.warning("%s: %s is not a JSON Web Key Set with keys; tokens of this issuer will "
                    "be refused", where, source)
        return _NO_KEYS
    return text


def provider(rule: Mapping[str, Any], where: str) -> jwt_pb2.JwtProvider:
    out = jwt_pb2.JwtProvider(
        issuer=str(rule.get("issuer") or ""),
        audiences=[str(a) for a in rule.get("audiences") or ()],
        local_jwks=base_pb2.DataSource(inline_string=jwks_text(rule, where)),
        # Istio removes the token once validated unless asked to pass it on.
        forward=bool(rule.get("forwardOriginalToken")),
        forward_payload_header=str(rule.get("outputPayloadToHeader") or ""),
        payload_in_metadata=PAYLOAD_KEY,
        from_params=[str(p) for p in rule.get("fromParams") or ()],
        from_cookies=[str(c) for c in rule.get("fromCookies") or ()],
    )
    for header in rule.get("fromHeaders") or ():
        out.from_headers.append(jwt_pb2.JwtHeader(
            name=str(header.get("name") or ""), value_prefix=str(header.get("prefix") or "")
        ))
    for claim in rule.get("outputClaimToHeaders") or ():
        out.claim_to_headers.append(jwt_pb2.JwtClaimToHeader(
            header_name=str(claim.get("header") or ""), claim_name=str(claim.get("claim") or "")
        ))
    return out


def provider_name(policy: ConfigObject, index: int) -> str:
    return f"{policy.namespace}/{policy.name}/{index}"


def jwt_authentication(policies: Iterable[ConfigObject]) -> jwt_pb2.JwtAuthentication | None:
    """The filter config for the RequestAuthentications selecting a workload (None: none)."""
    providers: dict[str, jwt_pb2.JwtProvider] = {}
    for policy in policies:
        for index, rule in enumerate(policy.spec.get("jwtRules") or ()):
            where = f"RequestAuthentication {policy.namespace}/{policy.name} jwtRules[{index}]"
            providers[provider_name(policy, index)] = provider(rule, where)
    if not providers:
        return None
    requirements = [jwt_pb2.JwtRequirement(provider_name=name) for name in providers]
    # A missing token is let through; a present but invalid one fails every requirement.
    requirements.append(jwt_pb2.JwtRequirement(allow_missing=empty_pb2.Empty()))
    return jwt_pb2.JwtAuthentication(
        providers=providers,
        rules=[jwt_pb2.RequirementRule(
            match={"prefix": "/"},
            requires=jwt_pb2.JwtRequirement(
                requires_any=jwt_pb2.JwtRequirementOrList(requirements=requirements)
            ),
        )],
        # CORS preflights carry no credentials by design.
        bypass_cors_preflight=True,
    )


def jwt_filter(policies: Iterable[ConfigObject]) -> list[hcm_pb2.HttpFilter]:
    config = jwt_authentication(policies)
    if config is None:
        return []
    return [hcm_pb2.HttpFilter(name=JWT_FILTER, typed_config=pack(config))]
