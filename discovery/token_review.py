"""Pod tokens checked by the cluster: the TokenReview API (istiod's KubeJWTAuthenticator).

A workload's projected service-account token (audience ``istio-ca``) is sent to the API
server as a ``TokenReview``; its answer says whether the token is good for that audience and
whose it is (``system:serviceaccount:NS:SA``, the pod's name and UID under ``extra``).
``identity_from`` reads that answer (sans-IO); every refusal says why. ``TokenReviewer``
does the round trip, blocking (the ``kubernetes`` client is synchronous: callers run it in a
worker thread), and remembers successful reviews briefly so a burst of CSRs and ADS streams
from one pod costs one review: at most ``CACHE_SECONDS``, never past the token's own expiry, at most
``CACHE_ENTRIES`` tokens (the oldest forgotten first). Refusals are never cached: a token
the API server did not know a moment ago may be known now.
"""

from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import json
import threading
from collections.abc import Mapping
from typing import Any

from pilotfish.core.security.identity import Identity, IdentityError
from pilotfish.core.security.provider import CertError, Refusal
from pilotfish.plugins.kube.client import ApiError, Client

AUDIENCE = "istio-ca"  # Istio's TOKEN_AUDIENCES default
PATH = "/apis/authentication.k8s.io/v1/tokenreviews"
SA_PREFIX = "system:serviceaccount:"
POD_NAME = "authentication.kubernetes.io/pod-name"
POD_UID = "authentication.kubernetes.io/pod-uid"
CACHE_SECONDS = 60.0
CACHE_ENTRIES = 10_000


def review_body(token: str, audience: str = AUDIENCE) -> dict[str, Any]:
    return {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "spec": {"token": token, "audiences": [audience]}}


def _refused(message: str) -> CertError:
    return CertError(Refusal.UNAUTHENTICATED, message)


def identity_from(answer: Mapping[str, Any], audience: str = AUDIENCE) -> Identity:
    """The service account (and pod) a TokenReview's answer vouches for, or ``CertError``."""
    status = answer.get("status") or {}
    if not status.get("authenticated"):
        reason = status.get("error") or "no reason given"
        raise _refused(f"the Kubernetes API server did not authenticate the token: {reason}")
    audiences = status.get("audiences")
    if audiences is not None and audience not in audiences:
        raise _refused(f"the token is not for audience {audience!r} (it is for "
                       f"{', '.join(audiences) or 'none'})")
    user = status.get("user") or {}
    username = str(user.get("username") or "")
    if not username.startswith(SA_PREFIX) or username.count(":") != 3:
        raise _refused(f"the token belongs to {username or 'nobody'!r}, not to a service "
                       "account (system:serviceaccount:NAMESPACE:NAME)")
    namespace, _, account = username.removeprefix(SA_PREFIX).partition(":")
    extra = user.get("extra") or {}
    pods = extra.get(POD_NAME) or []
    uids = extra.get(POD_UID) or []
    try:
        return Identity(namespace, account, pod=str(pods[0]) if pods else "",
                        source="token review", pod_uid=str(uids[0]) if uids else "")
    except IdentityError as exc:
        raise _refused(str(exc)) from exc


def token_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT, read without checking it (the API server checks);
    None when the token is not a JWT or says nothing."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) else None


class ReviewCache:
    """Successful reviews by token digest (never the token itself), bounded in time and
    size; thread-safe, as reviews run in worker threads."""

    def __init__(self, seconds: float = CACHE_SECONDS, entries: int = CACHE_ENTRIES) -> None:
        self.seconds, self.entries = seconds, entries
        self._held: collections.OrderedDict[bytes, tuple[float, Identity]] = \
            collections.OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    def get(self, token: str, now: float) -> Identity | None:
        key = self._key(token)
        with self._lock:
            held = self._held.get(key)
            if held is None:
                return None
            if held[0] <= now:
                del self._held[key]
                return None
            return held[1]

    def put(self, token: str, identity: Identity, now: float) -> None:
        until = now + self.seconds
        expiry = token_expiry(token)
        if expiry is not None:
            until = min(until, expiry)
        if until <= now:
            return
        with self._lock:
            self._held[self._key(token)] = (until, identity)
            self._held.move_to_end(self._key(token))
            while len(self._held) > self.entries:
                self._held.popitem(last=False)

    def __len__(self) -> int:
        return len(self._held)


class TokenReviewer:
    """Checks pod tokens with the cluster's API server (blocking; see the module)."""

    def __init__(self, client: Client, audience: str = AUDIENCE,
                 cache: ReviewCache | None = None) -> None:
        self.client = client
        self.audience = audience
        self.cache = cache if cache is not None else ReviewCache()
        self.reviews = 0  # round trips made (the cache's hits are not)

    def review(self, token: str, now: float) -> Identity:
        held = self.cache.get(token, now)
        if held is not None:
            return held
        self.reviews += 1
        try:
            answer = self.client.request("POST", PATH, body=review_body(token, self.audience))
        except ApiError as exc:
            raise CertError(Refusal.INTERNAL, f"the token could not be reviewed: TokenReview "
                            f"at {self.client.host} failed: {exc}") from exc
        identity = identity_from(answer, self.audience)
        self.cache.put(token, identity, now)
        return identity
