"""The CA's node authorization: a node agent (ztunnel) may have a certificate for another
identity only when a pod with that identity runs on the agent's own node."""

from __future__ import annotations

import pytest

from pilotfish.core.objects import ConfigObject
from pilotfish.core.security.identity import Identity
from pilotfish.core.security.pki import make_bundle, self_signed_root
from pilotfish.core.security.provider import CertError, CertSettings, Refusal
from pilotfish.core.yamlload import load_text
from pilotfish.discovery.ca_service import create_certificate
from pilotfish.discovery.node_authz import authorize_impersonation
from pilotfish.plugins.certs.istio_ca import IstioCa
from pilotfish.testing.certs import make_csr, uri_sans, verify_chain

NOW = 1_800_000_000.0
REVIEWS = "spiffe://cluster.local/ns/shop/sa/reviews"
RATINGS = "spiffe://cluster.local/ns/shop/sa/ratings"
ZTUNNEL = Identity("istio-system", "ztunnel", pod="ztunnel-a")


def pods(text: str) -> list[ConfigObject]:
    objects, errors = load_text(text, "pods.yaml")
    assert not errors, errors
    return objects


def pod(name: str, namespace: str, account: str, node: str | None, phase: str = "Running"
        ) -> str:
    node_line = f"nodeName: {node}, " if node is not None else ""
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {namespace}}}
spec: {{{node_line}serviceAccountName: {account}, containers: [{{name: c}}]}}
status: {{phase: {phase}}}
"""


CLUSTER = pods("---".join([
    pod("ztunnel-a", "istio-system", "ztunnel", "node-a"),
    pod("ztunnel-b", "istio-system", "ztunnel", "node-b"),
    pod("reviews-0", "shop", "reviews", "node-a"),
    pod("ratings-0", "shop", "ratings", "node-b"),
    pod("ratings-old", "shop", "ratings", "node-a", phase="Succeeded"),
    pod("impostor", "istio-system", "default", "node-b"),
]))


@pytest.fixture(scope="module")
def ca() -> IstioCa:
    cert, key = self_signed_root("cluster.local", NOW - 60)
    return IstioCa(make_bundle(cert, key, [], [cert]), CertSettings(state_dir=None))  # type: ignore[arg-type]


def refusal(caller: Identity, requested: str, found: list[ConfigObject] = CLUSTER) -> str:
    with pytest.raises(CertError) as info:
        authorize_impersonation(caller, requested, "cluster.local", found)
    assert info.value.refusal is Refusal.PERMISSION_DENIED
    return str(info.value)


def test_a_node_agent_gets_the_identities_running_on_its_node() -> None:
    granted = authorize_impersonation(ZTUNNEL, REVIEWS, "cluster.local", CLUSTER)
    assert granted.spiffe_id("cluster.local") == REVIEWS
    other = Identity("istio-system", "ztunnel", pod="ztunnel-b")
    assert authorize_impersonation(other, RATINGS, "cluster.local", CLUSTER).service_account \
        == "ratings"


def test_an_identity_on_another_node_is_refused() -> None:
    # ratings-old ran on node-a but has finished: it does not count.
    assert refusal(ZTUNNEL, RATINGS) == (
        f"identity {RATINGS} is not on the node agent's node: no pod of service account "
        "shop/ratings runs on node 'node-a' (where istio-system/ztunnel-a runs)")


def test_a_caller_that_is_not_a_node_agent_is_refused() -> None:
    message = refusal(Identity("shop", "reviews", pod="reviews-0"), RATINGS)
    assert message.startswith("caller shop/reviews is not a node agent (trusted node "
                              "accounts: istio-system/ztunnel, kube-system/ztunnel)")


def test_the_node_comes_from_the_callers_own_pod() -> None:
    certificate = Identity("istio-system", "ztunnel", source="certificate")
    assert "proved itself by certificate, which names no pod" in refusal(certificate, REVIEWS)
    ghost = Identity("istio-system", "ztunnel", pod="ztunnel-gone")
    assert "its pod istio-system/ztunnel-gone is not known to discovery" in refusal(ghost,
                                                                                   REVIEWS)
    # A token for the ztunnel account bound to a pod running as another account.
    borrowed = Identity("istio-system", "ztunnel", pod="impostor")
    assert "runs as service account 'default', not 'ztunnel'" in refusal(borrowed, RATINGS)


def test_a_token_of_a_pod_since_re_created_is_refused() -> None:
    recreated = pods(pod("ztunnel-a", "istio-system", "ztunnel", "node-a").replace(
        "namespace: istio-system}", "namespace: istio-system, uid: new-uid}"))
    found = [*recreated, *CLUSTER[2:]]
    old = Identity("istio-system", "ztunnel", pod="ztunnel-a", pod_uid="old-uid")
    assert "bound to pod istio-system/ztunnel-a with UID old-uid, but the pod of that name " \
        "now has UID new-uid" in refusal(old, REVIEWS, found)
    current = Identity("istio-system", "ztunnel", pod="ztunnel-a", pod_uid="new-uid")
    assert authorize_impersonation(current, REVIEWS, "cluster.local", found).pod == ""


def test_pods_without_a_node_name_share_the_local_node() -> None:
    local = pods("---".join([pod("ztunnel-0", "istio-system", "ztunnel", None),
                             pod("reviews-0", "shop", "reviews", None),
                             pod("ratings-0", "shop", "ratings", "node-b")]))
    agent = Identity("istio-system", "ztunnel", pod="ztunnel-0")
    assert authorize_impersonation(agent, REVIEWS, "cluster.local", local).namespace == "shop"
    assert "the node of pods without spec.nodeName" in refusal(agent, RATINGS, local)
    # ...and a scheduled node agent never shares it with unscheduled pods.
    assert "node 'node-a'" in refusal(ZTUNNEL, REVIEWS, [*local, CLUSTER[0]])


def test_a_malformed_or_foreign_identity_is_refused() -> None:
    with pytest.raises(CertError, match="ImpersonatedIdentity: 'reviews' is not a SPIFFE ID") \
            as info:
        authorize_impersonation(ZTUNNEL, "reviews", "cluster.local", CLUSTER)
    assert info.value.refusal is Refusal.INVALID_ARGUMENT
    assert "in trust domain 'other.org'" in refusal(
        ZTUNNEL, "spiffe://other.org/ns/shop/sa/reviews")


def test_the_certificate_is_for_the_impersonated_identity(ca: IstioCa) -> None:
    settings = CertSettings(state_dir=None)  # type: ignore[arg-type]
    metadata = {"ImpersonatedIdentity": REVIEWS}
    chain = create_certificate(ca, settings, ZTUNNEL, make_csr(uris=[REVIEWS])[0], 3600,
                               metadata, NOW, CLUSTER)
    assert uri_sans(verify_chain(chain, ca.trust_bundle(), NOW)) == [REVIEWS]
    with pytest.raises(CertError, match=f"CSR asks for identity {RATINGS}"):
        create_certificate(ca, settings, ZTUNNEL, make_csr(uris=[RATINGS])[0], 3600,
                           metadata, NOW, CLUSTER)
    with pytest.raises(CertError, match="is not on the node agent's node"):
        create_certificate(ca, settings, ZTUNNEL, make_csr()[0], 3600,
                           {"ImpersonatedIdentity": RATINGS}, NOW, CLUSTER)
