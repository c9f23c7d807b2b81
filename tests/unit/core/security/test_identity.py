"""Workload identities: names are checked whole, a trailing newline included."""

from __future__ import annotations

import pytest

from pilotfish.core.security.identity import (
    Identity,
    IdentityError,
    check_trust_domain,
    parse_spiffe_id,
)


def test_a_spiffe_id_parses_into_trust_domain_and_identity():
    domain, who = parse_spiffe_id("spiffe://cluster.local/ns/shop/sa/reviews")
    assert domain == "cluster.local"
    assert (who.namespace, who.service_account, who.source) == ("shop", "reviews",
                                                                 "certificate")


@pytest.mark.parametrize("uri", [
    "spiffe://cluster.local/ns/shop/sa/reviews\n",
    "spiffe://cluster.local/ns/shop\n/sa/reviews",
    "spiffe://cluster.local\n/ns/shop/sa/reviews",
    "spiffe://cluster.local/ns/Shop/sa/reviews",
    "spiffe://cluster.local/ns/shop/sa/reviews/extra",
    "spiffe://cluster.local/ns/shop/serviceaccount/reviews",
    "https://cluster.local/ns/shop/sa/reviews",
])
def test_anything_but_an_exact_workload_id_is_refused(uri):
    with pytest.raises(IdentityError):
        parse_spiffe_id(uri)


@pytest.mark.parametrize(("namespace", "account"), [
    ("shop\n", "reviews"), ("shop", "reviews\n"), ("-shop", "reviews"), ("shop", ""),
    ("s" * 64, "reviews"),
])
def test_identity_names_are_checked_whole(namespace, account):
    with pytest.raises(IdentityError):
        Identity(namespace, account)


def test_trust_domain_with_a_trailing_newline_is_refused():
    assert check_trust_domain("cluster.local") == "cluster.local"
    with pytest.raises(IdentityError, match="trust domain"):
        check_trust_domain("cluster.local\n")
