"""Pod tokens: what the node issues and discovery accepts (no clock: time is passed in)."""

from __future__ import annotations

import jwt
import pytest

from pilotfish.core.security import tokens
from pilotfish.core.security.identity import Identity

NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def keys() -> tuple[bytes, bytes]:
    return tokens.generate_keypair()


def test_a_valid_token_proves_the_pods_service_account(keys):
    private, public = keys
    token = tokens.issue(private, "shop", "reviews", "reviews-v1-0", 3600, now=NOW)
    assert tokens.verify(public, token, now=NOW + 10) == Identity("shop", "reviews",
                                                                  "reviews-v1-0")


def test_claims_are_shaped_like_a_projected_service_account_token(keys):
    private, _ = keys
    token = tokens.issue(private, "shop", "reviews", "reviews-v1-0", 600, now=NOW)
    assert jwt.get_unverified_header(token)["alg"] == "ES256"
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims == {
        "iss": "pilotfish-node", "aud": ["istio-ca"],
        "sub": "system:serviceaccount:shop:reviews",
        "kubernetes.io": {"namespace": "shop", "serviceaccount": {"name": "reviews"},
                          "pod": {"name": "reviews-v1-0"}},
        "iat": int(NOW), "nbf": int(NOW), "exp": int(NOW) + 600,
    }


def test_expired_token_is_refused(keys):
    private, public = keys
    token = tokens.issue(private, "shop", "reviews", "p", 60, now=NOW)
    with pytest.raises(tokens.TokenError, match="expired 40s ago"):
        tokens.verify(public, token, now=NOW + 100)


def test_token_from_the_future_is_refused(keys):
    private, public = keys
    token = tokens.issue(private, "shop", "reviews", "p", 60, now=NOW + 600)
    with pytest.raises(tokens.TokenError, match="not valid yet"):
        tokens.verify(public, token, now=NOW)


def test_wrong_audience_is_refused(keys):
    private, public = keys
    token = tokens.issue(private, "shop", "reviews", "p", 60, now=NOW, audience=["kubernetes"])
    with pytest.raises(tokens.TokenError, match="audience is not 'istio-ca'"):
        tokens.verify(public, token, now=NOW)


def test_token_signed_by_another_key_is_refused(keys):
    other_private, _ = tokens.generate_keypair()
    token = tokens.issue(other_private, "shop", "reviews", "p", 60, now=NOW)
    with pytest.raises(tokens.TokenError, match="signature does not verify"):
        tokens.verify(keys[1], token, now=NOW)


@pytest.mark.parametrize("garbage", ["", "garbage", "a.b.c", "Bearer x.y.z"])
def test_garbage_is_refused(keys, garbage):
    with pytest.raises(tokens.TokenError, match="not a valid JWT"):
        tokens.verify(keys[1], garbage, now=NOW)


def test_hs256_with_the_public_key_as_secret_is_refused(keys):
    # The classic algorithm-confusion forgery: only ES256 is accepted.
    forged = jwt.encode({"iss": "pilotfish-node"}, "s" * 32, algorithm="HS256")
    with pytest.raises(tokens.TokenError, match="ES256"):
        tokens.verify(keys[1], forged, now=NOW)


def _signed(private: bytes, claims: dict) -> str:
    return jwt.encode(claims, private, algorithm="ES256")


def test_subject_must_agree_with_the_kubernetes_claim(keys):
    private, public = keys
    token = _signed(private, {
        "iss": "pilotfish-node", "aud": ["istio-ca"], "sub": "system:serviceaccount:shop:admin",
        "kubernetes.io": {"namespace": "shop", "serviceaccount": {"name": "reviews"}},
        "iat": NOW, "exp": NOW + 60})
    with pytest.raises(tokens.TokenError, match="does not match"):
        tokens.verify(public, token, now=NOW)


def test_missing_kubernetes_claim_and_wrong_issuer_are_refused(keys):
    private, public = keys
    base = {"iss": "pilotfish-node", "aud": ["istio-ca"], "sub": "system:serviceaccount:a:b",
            "iat": NOW, "exp": NOW + 60}
    with pytest.raises(tokens.TokenError, match=r"no 'kubernetes\.io' claim"):
        tokens.verify(public, _signed(private, base), now=NOW)
    with pytest.raises(tokens.TokenError, match="issuer"):
        tokens.verify(public, _signed(private, {**base, "iss": "kubernetes"}), now=NOW)
    without_exp = {k: v for k, v in base.items() if k != "exp"}
    with pytest.raises(tokens.TokenError, match="'exp'"):
        tokens.verify(public, _signed(private, without_exp), now=NOW)


def test_names_that_would_forge_a_spiffe_path_are_refused(keys):
    private, public = keys
    with pytest.raises(ValueError, match="service account"):
        tokens.issue(private, "shop", "x/sa/admin", "p", 60)
    token = _signed(private, {
        "iss": "pilotfish-node", "aud": ["istio-ca"], "sub": "system:serviceaccount:shop:x/sa/y",
        "kubernetes.io": {"namespace": "shop", "serviceaccount": {"name": "x/sa/y"}},
        "iat": NOW, "exp": NOW + 60})
    with pytest.raises(tokens.TokenError, match="invalid identity"):
        tokens.verify(public, token, now=NOW)
