"""Bearer tokens: who each one is, for which audiences, and the TokenReview answer.

A test registers tokens; kube-apiserver would have issued them (a service account's
projected token names the pod it was mounted in, under ``extra``, as the
``authentication.kubernetes.io/pod-name`` and ``pod-uid`` keys). A TokenReview authenticates
a token for the audiences it asks for (the server's own when it asks for none): the answer
lists the ones the token is good for, or says ``authenticated: false`` with an error.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

API_AUDIENCE = "https://kubernetes.default.svc.cluster.local"


@attrs.frozen
class TokenUser:
    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)
    audiences: tuple[str, ...] = (API_AUDIENCE,)

    def user_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"username": self.username, "groups": list(self.groups)}
        if self.uid:
            info["uid"] = self.uid
        if self.extra:
            info["extra"] = {key: list(values) for key, values in self.extra.items()}
        return info


def service_account(namespace: str, name: str, *, uid: str = "", pod: str = "",
                    pod_uid: str = "", node: str = "", audiences: Sequence[str] = ("istio-ca",)
                    ) -> TokenUser:
    """The identity of a projected service-account token, as kube-apiserver reports it."""
    extra: dict[str, tuple[str, ...]] = {}
    if pod:
        extra["authentication.kubernetes.io/pod-name"] = (pod,)
        extra["authentication.kubernetes.io/pod-uid"] = (pod_uid,)
    if node:
        extra["authentication.kubernetes.io/node-name"] = (node,)
    return TokenUser(f"system:serviceaccount:{namespace}:{name}", uid,
                     ("system:serviceaccounts", f"system:serviceaccounts:{namespace}",
                      "system:authenticated"), extra, tuple(audiences))


class Tokens:
    def __init__(self) -> None:
        self._users: dict[str, TokenUser] = {}

    def add(self, user: TokenUser, token: str = "") -> str:
        """Register ``user``'s token (a random one unless given); returns it."""
        token = token or secrets.token_urlsafe(32)
        self._users[token] = user
        return token

    def revoke(self, token: str) -> None:
        self._users.pop(token, None)

    def authenticate(self, token: str) -> TokenUser | None:
        """Who a bearer token on an API request is (it must be good for the API server)."""
        user = self._users.get(token)
        return user if user is not None and API_AUDIENCE in user.audiences else None

    def review(self, review: Mapping[str, Any]) -> dict[str, Any]:
        """A TokenReview with its status filled in."""
        spec = review.get("spec") or {}
        wanted = list(spec.get("audiences") or [API_AUDIENCE])
        user = self._users.get(spec.get("token") or "")
        good = [audience for audience in wanted if user and audience in user.audiences]
        answer = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                  "metadata": {"creationTimestamp": None, **(review.get("metadata") or {})},
                  "spec": dict(spec)}
        if user is None:
            answer["status"] = {"authenticated": False, "error": "invalid bearer token"}
        elif not good:
            answer["status"] = {"authenticated": False, "error":
                                f"token audiences {list(user.audiences)} is invalid for the "
                                f"target audiences {wanted}"}
        else:
            answer["status"] = {"authenticated": True, "user": user.user_info(),
                                "audiences": good}
        return answer
