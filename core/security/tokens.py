"""Pod tokens: the local stand-in for Kubernetes projected service-account tokens.

The node issues each pod a JWT signed with its own ECDSA P-256 key (ES256), shaped like the
token the Istio injector mounts at ``/var/run/secrets/tokens/istio-token``::

    {"iss": "pilotfish-node", "aud": ["istio-ca"],
     "sub": "system:serviceaccount:NS:SA",
     "kubernetes.io": {"namespace": NS, "serviceaccount": {"name": SA}, "pod": {"name": POD}},
     "iat": ..., "nbf": ..., "exp": ...}

Discovery verifies it with the node's public key (``--token-key``) where istiod would send
a TokenReview. Sans-IO: the time is an argument, so expiry is tested without waiting.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pilotfish.core.security.identity import Identity, IdentityError

ISSUER = "pilotfish-node"
AUDIENCE = "istio-ca"
ALGORITHM = "ES256"
SUBJECT_PREFIX = "system:serviceaccount:"


class TokenError(ValueError):
    """A token that does not prove an identity; the message says why."""


def generate_keypair() -> tuple[bytes, bytes]:
    """A new ES256 key pair as (private key PEM, PKCS#8; public key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


def issue(private_pem: bytes | str, namespace: str, service_account: str, pod: str,
          ttl: float, *, now: float | None = None,
          audience: Sequence[str] = (AUDIENCE,)) -> str:
    """A signed token for ``pod`` running as ``namespace/service_account``, valid ``ttl`` s."""
    Identity(namespace, service_account, pod)  # refuse names no verifier would accept
    issued = int(time.time() if now is None else now)
    claims = {
        "iss": ISSUER,
        "aud": list(audience),
        "sub": f"{SUBJECT_PREFIX}{namespace}:{service_account}",
        "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": service_account},
                          "pod": {"name": pod}},
        "iat": issued,
        "nbf": issued,
        "exp": issued + int(ttl),
    }
    key = private_pem.encode() if isinstance(private_pem, str) else private_pem
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def verify(public_pem: bytes | str, token: str, audience: str = AUDIENCE, *,
           now: float | None = None, leeway: float = 0.0) -> Identity:
    """The identity a token proves, or ``TokenError`` naming what is wrong with it."""
    key = public_pem.encode() if isinstance(public_pem, str) else public_pem
    try:
        # Times are checked below against ``now``; PyJWT only checks signature and shape.
        claims: dict[str, Any] = jwt.decode(
            token, key, algorithms=[ALGORITHM], audience=audience, issuer=ISSUER,
            options={"verify_exp": False, "verify_iat": False, "verify_nbf": False,
                     "require": ["iss", "aud", "sub", "exp", "iat"]},
        )
    except jwt.InvalidAudienceError as exc:
        raise TokenError(f"token audience is not {audience!r} ({exc})") from exc
    except jwt.InvalidIssuerError as exc:
        raise TokenError(f"token issuer is not {ISSUER!r}") from exc
    except jwt.InvalidSignatureError as exc:
        raise TokenError("token signature does not verify with the node's key "
                         "(forged, or issued by another node)") from exc
    except jwt.InvalidAlgorithmError as exc:
        raise TokenError(f"token is not signed with {ALGORITHM}") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise TokenError(f"token has no {exc.claim!r} claim") from exc
    except jwt.PyJWTError as exc:
        raise TokenError(f"not a valid JWT: {exc}") from exc
    return _identity(claims, time.time() if now is None else now, leeway)


def _identity(claims: Mapping[str, Any], now: float, leeway: float) -> Identity:
    exp, iat, nbf = claims.get("exp"), claims.get("iat"), claims.get("nbf", claims.get("iat"))
    for claim, value in (("exp", exp), ("iat", iat), ("nbf", nbf)):
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise TokenError(f"token claim {claim!r} is not a number")
    assert isinstance(exp, int | float) and isinstance(nbf, int | float)
    if now >= exp + leeway:
        raise TokenError(f"token expired {int(now - exp)}s ago")
    if now < nbf - leeway:
        raise TokenError("token is not valid yet (issued in the future)")
    kube = claims.get("kubernetes.io")
    if not isinstance(kube, Mapping):
        raise TokenError("token has no 'kubernetes.io' claim (namespace, service account)")
    namespace = kube.get("namespace")
    account = kube.get("serviceaccount")
    name = account.get("name") if isinstance(account, Mapping) else None
    pod = kube.get("pod")
    pod_name = str(pod.get("name") or "") if isinstance(pod, Mapping) else ""
    if not isinstance(namespace, str) or not isinstance(name, str):
        raise TokenError("token's 'kubernetes.io' claim lacks namespace or serviceaccount.name")
    # The subject and the structured claim must agree, as in a real projected token.
    if claims.get("sub") != f"{SUBJECT_PREFIX}{namespace}:{name}":
        raise TokenError(f"token subject {claims.get('sub')!r} does not match "
                         f"kubernetes.io {namespace}/{name}")
    try:
        return Identity(namespace, name, str(pod_name), source="token")
    except IdentityError as exc:
        raise TokenError(f"token names an invalid identity: {exc}") from exc
