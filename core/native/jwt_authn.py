"""Envoy's JWT authentication filter, sans-IO: providers (issuer, audiences, an inline key
set, where tokens are looked for) and the requirement rules that say which requests need
which provider, compiled once per config.

A request's tokens are verified with PyJWT against the provider's keys (by ``kid`` and
algorithm), with Envoy's 60 s clock skew; a failure answers 401 with Envoy's reason. A
verified token's payload goes to dynamic metadata (``payload_in_metadata``), where the
RBAC filter's request principals and claims read it; the token is removed from the request
unless the provider forwards it.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import attrs

from pilotfish.core.native import matchers, subset

if TYPE_CHECKING:  # PyJWT (and the cryptography it loads: ~12 MiB) only when a filter asks
    import jwt

FILTER = "envoy.filters.http.jwt_authn"
CLOCK_SKEW = 60  # seconds, Envoy's default
CACHE_SIZE = 100  # verified tokens kept per provider

MISSING = "Jwt is missing"
MALFORMED = "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
EXPIRED = "Jwt is expired"
NOT_YET = "Jwt not yet valid"
UNKNOWN_ISSUER = "Jwt issuer is not configured"
AUDIENCE = "Audiences in Jwt are not allowed"
NO_KEY = "Jwks doesn't have key to match kid or alg from Jwt"
FAILED = "Jwt verification fails"


class Failure(Exception):
    """A token that does not verify; the message is Envoy's reason."""


@attrs.frozen
class Token:
    text: str
    header: str = ""  # the header it came in ("" for a query parameter or cookie)


@attrs.define(eq=False)
class Provider:
    name: str
    issuer: str
    audiences: frozenset[str]
    keys: tuple[jwt.PyJWK, ...]
    forward: bool = False
    forward_payload_header: str = ""
    payload_key: str = ""
    headers: tuple[tuple[str, str], ...] = ()  # (name, value prefix)
    params: tuple[str, ...] = ()
    cookies: tuple[str, ...] = ()
    claims_to_headers: tuple[tuple[str, str], ...] = ()  # (header, claim)
    _verified: dict[str, dict[str, Any]] = attrs.field(factory=dict)

    def tokens(self, headers: Sequence[tuple[str, str]], target: str) -> list[Token]:
        """The tokens a request carries where this provider looks (Envoy's defaults: the
        ``Authorization: Bearer`` header and the ``access_token`` parameter)."""
        found = []
        places = self.headers or (() if self.params or self.cookies else
                                  (("authorization", "Bearer "),))
        for name, prefix in places:
            for key, value in headers:
                if key == name and value.startswith(prefix):
                    found.append(Token(value[len(prefix):].strip(), name))
        params = self.params or (() if self.headers or self.cookies else ("access_token",))
        if params and "?" in target:
            for key, value in parse_qsl(target.split("?", 1)[1], keep_blank_values=True):
                if key in params:
                    found.append(Token(value))
        if self.cookies:
            for key, value in headers:
                if key != "cookie":
                    continue
                for part in value.split(";"):
                    name, _, text = part.strip().partition("=")
                    if name in self.cookies:
                        found.append(Token(text))
        return found

    def verify(self, token: str, now: float) -> dict[str, Any]:
        """The token's payload, or ``Failure`` with Envoy's reason."""
        payload = self._verified.get(token)
        if payload is None:
            payload = self._verify(token)
            if len(self._verified) >= CACHE_SIZE:
                self._verified.pop(next(iter(self._verified)))
            self._verified[token] = payload
        expiry, not_before = payload.get("exp"), payload.get("nbf")
        if isinstance(expiry, (int, float)) and now > expiry + CLOCK_SKEW:
            raise Failure(EXPIRED)
        if isinstance(not_before, (int, float)) and now < not_before - CLOCK_SKEW:
            raise Failure(NOT_YET)
        return payload

    def _verify(self, token: str) -> dict[str, Any]:
        import jwt
        if token.count(".") != 2:
            raise Failure(MALFORMED)
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise Failure(MALFORMED) from None
        if self.issuer and claims.get("iss") != self.issuer:
            raise Failure(UNKNOWN_ISSUER)
        if self.audiences:
            audience = claims.get("aud")
            given = {audience} if isinstance(audience, str) else set(audience or ())
            if not given & self.audiences:
                raise Failure(AUDIENCE)
        algorithm, kid = header.get("alg"), header.get("kid")
        keys = [k for k in self.keys if (not kid or k.key_id in (None, kid)) and
                (k.algorithm_name in (None, algorithm))]
        if not keys:
            raise Failure(NO_KEY)
        for key in keys:
            try:
                return dict(jwt.decode(token, key.key, algorithms=[str(algorithm)],
                                       options={"verify_aud": False, "verify_exp": False,
                                                "verify_nbf": False, "verify_iat": False}))
            except jwt.PyJWTError:
                continue
        raise Failure(FAILED)


def _key_set(text: str) -> tuple[jwt.PyJWK, ...]:
    import jwt
    data = json.loads(text)
    keys = []
    for entry in data.get("keys") or ():
        try:
            keys.append(jwt.PyJWK(entry))
        except jwt.PyJWTError:
            continue  # a key PyJWT cannot use verifies nothing, as Envoy skips it
    return tuple(keys)


def provider(name: str, message: Any) -> Provider:
    local = message.local_jwks
    text = subset.data(local).decode()
    return Provider(
        name, message.issuer, frozenset(message.audiences), _key_set(text),
        message.forward, message.forward_payload_header.lower(),
        message.payload_in_metadata,
        tuple((h.name.lower(), h.value_prefix) for h in message.from_headers),
        tuple(message.from_params), tuple(message.from_cookies),
        tuple((c.header_name.lower(), c.claim_name) for c in message.claim_to_headers))


@attrs.define
class Outcome:
    """What verification learned about one request."""

    payloads: dict[str, tuple[Provider, dict[str, Any], Token]] = attrs.field(factory=dict)
    error: str = ""


Requirement = Callable[[Sequence[tuple[str, str]], str, float, Outcome], bool]


def _by_provider(p: Provider) -> Requirement:
    def check(headers: Sequence[tuple[str, str]], target: str, now: float,
              outcome: Outcome) -> bool:
        tokens = p.tokens(headers, target)
        if not tokens:
            outcome.error = MISSING
            return False
        for token in tokens:
            try:
                outcome.payloads[p.name] = (p, p.verify(token.text, now), token)
            except Failure as failure:
                outcome.error = str(failure)
                return False
        return True
    return check


def _allow_missing(providers: Sequence[Provider], or_failed: bool) -> Requirement:
    def check(headers: Sequence[tuple[str, str]], target: str, now: float,
              outcome: Outcome) -> bool:
        failed: dict[str, str] = {}  # token → why no provider took it
        for p in providers:
            for token in p.tokens(headers, target):
                try:
                    outcome.payloads[p.name] = (p, p.verify(token.text, now), token)
                    failed[token.text] = ""
                except Failure as failure:
                    # another provider's issuer: that provider decides
                    if failed.get(token.text) != "" and (
                            failure.args[0] != UNKNOWN_ISSUER or token.text not in failed):
                        failed[token.text] = str(failure)
        errors = [why for why in failed.values() if why]
        if errors:
            outcome.error = errors[0]
        return not errors or or_failed
    return check


def requirement(message: Any, providers: Mapping[str, Provider]) -> Requirement:
    kind = message.WhichOneof("requires_type")
    if kind == "provider_name":
        found = providers.get(message.provider_name)
        if found is None:
            raise ValueError(f"requirement names provider {message.provider_name!r}, "
                             "which is not configured")
        return _by_provider(found)
    if kind in ("allow_missing", "allow_missing_or_failed"):
        return _allow_missing(list(providers.values()), kind == "allow_missing_or_failed")
    if kind in ("requires_any", "requires_all"):
        parts = [requirement(r, providers) for r in getattr(message, kind).requirements]
        if kind == "requires_any":
            def any_of(headers: Sequence[tuple[str, str]], target: str, now: float,
                       outcome: Outcome) -> bool:
                return any(part(headers, target, now, outcome) for part in parts)
            return any_of

        def all_of(headers: Sequence[tuple[str, str]], target: str, now: float,
                   outcome: Outcome) -> bool:
            return all(part(headers, target, now, outcome) for part in parts)
        return all_of
    raise ValueError(f"JWT requirement {kind} is not supported by the native proxy")


@attrs.frozen
class Verdict:
    headers: list[tuple[str, str]]  # the request's headers after the filter
    metadata: dict[str, Any]  # the filter's dynamic metadata
    error: str = ""  # non-empty: answer 401 with it


@attrs.frozen
class JwtFilter:
    rules: tuple[tuple[matchers.RouteMatch, Requirement], ...]
    bypass_cors_preflight: bool = False

    def check(self, method: str, target: str, headers: list[tuple[str, str]],
              now: float | None = None) -> Verdict:
        lookup = dict(headers)
        if self.bypass_cors_preflight and method == "OPTIONS" and "origin" in lookup and \
                "access-control-request-method" in lookup:
            return Verdict(headers, {})
        query = dict(parse_qsl(target.split("?", 1)[1])) if "?" in target else {}
        for match, required in self.rules:
            if match.holds(target, lookup, query):
                outcome = Outcome()
                if not required(headers, target, time.time() if now is None else now,
                                outcome):
                    return Verdict(headers, {}, outcome.error or FAILED)
                return _passed(headers, outcome)
        return Verdict(headers, {})


def _passed(headers: list[tuple[str, str]], outcome: Outcome) -> Verdict:
    metadata: dict[str, Any] = {}
    drop = set()
    added = []
    for p, payload, token in outcome.payloads.values():
        if p.payload_key:
            metadata[p.payload_key] = payload
        if not p.forward and token.header:
            drop.add(token.header)
        if p.forward_payload_header:
            encoded = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=")
            added.append((p.forward_payload_header, encoded.decode()))
        for header, claim in p.claims_to_headers:
            value = payload.get(claim)
            if isinstance(value, (str, int, float, bool)):
                added.append((header, str(value).lower() if isinstance(value, bool)
                              else str(value)))
    names = drop | {name for name, _ in added}
    if names:
        headers = [(k, v) for k, v in headers if k not in names] + added
    return Verdict(headers, metadata)


def jwt_filter(message: Any) -> JwtFilter:
    providers = {name: provider(name, p) for name, p in message.providers.items()}
    rules = []
    for rule in message.rules:
        if not rule.HasField("requires"):
            raise ValueError("a JWT rule without `requires` is not supported by the native "
                             "proxy")
        rules.append((matchers.route_match(rule.match), requirement(rule.requires, providers)))
    return JwtFilter(tuple(rules), message.bypass_cors_preflight)
