"""The CA on a cluster against the fake API server, through the official client: the root
shared through Secrets (cacerts first), TokenReview, the root ConfigMaps and the webhooks'
caBundle; and the decisions over data behind them."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import anyio.from_thread
import kubernetes
import pytest
from kubernetes.client import ApiException

from pilotfish.core.security import tokens
from pilotfish.core.security.pki import cert_pem, key_pem, self_signed_root
from pilotfish.core.security.provider import CertError, CertSettings, Refusal
from pilotfish.discovery import cluster_ca, token_review
from pilotfish.discovery.authn import Authenticator, Credentials
from pilotfish.discovery.inject.policy import webhook_configurations
from pilotfish.plugins.certs import istio_ca
from pilotfish.plugins.kube import client as kube_client
from pilotfish.testing.kube import FakeKubeApi, running
from pilotfish.testing.kube.tokens import TokenUser, service_account
from pilotfish.testing.processes import wait_until

NOW = time.time()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[FakeKubeApi]:
    with running(tmp_path / "api") as api:
        api.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}},
                 {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
        yield api


@pytest.fixture
def client(api: FakeKubeApi) -> Iterator[kube_client.Client]:
    made = kube_client.load(api.kubeconfig)
    yield made
    made.close()


@pytest.fixture
def core(api: FakeKubeApi) -> Iterator[kubernetes.client.CoreV1Api]:
    with kubernetes.config.new_client_from_config(str(api.kubeconfig)) as made:
        yield kubernetes.client.CoreV1Api(made)


def provider(client: kube_client.Client, tmp_path: Path) -> istio_ca.IstioCa:
    settings = CertSettings(tmp_path / "state", root_store=cluster_ca.SecretRootStore(client))
    return istio_ca.pilotfish_cert_provider(settings=settings)


def decoded(data: Mapping[str, str], key: str) -> str:
    return base64.b64decode(data[key]).decode()


# -- the root in a Secret -------------------------------------------------------------------


def test_two_replicas_share_the_root_the_first_one_stored(client, core, tmp_path):
    first = provider(client, tmp_path / "one")
    second = provider(client, tmp_path / "two")
    assert first.trust_bundle() == second.trust_bundle()
    secret = core.read_namespaced_secret("istio-ca-secret", "istio-system")
    assert secret.type == "istio.io/ca-root"
    assert decoded(secret.data, "ca-cert.pem") == first.trust_bundle()


def test_a_replica_that_loses_the_race_to_create_uses_the_winners_root(client):
    store = cluster_ca.SecretRootStore(client)
    winner: dict[str, str] = {}

    def make() -> dict[str, str]:
        # Another replica stores its root between our read and our create: we get 409.
        winner.update(istio_ca.self_signed_files("cluster.local", NOW))
        cluster_ca.SecretRootStore(client).load_or_create(lambda: winner)
        return istio_ca.self_signed_files("cluster.local", NOW)

    files, origin = store.load_or_create(make)
    assert files["ca-cert.pem"] == winner["ca-cert.pem"]
    assert origin == "Secret istio-system/istio-ca-secret"


def plugged_in(kind: str = "istio") -> tuple[dict[str, Any], str]:
    cert, key = self_signed_root("plugged.example", NOW)
    pem = cert_pem(cert)
    files = ({"ca-cert.pem": pem, "ca-key.pem": key_pem(key), "root-cert.pem": pem,
              "cert-chain.pem": pem} if kind == "istio" else
             {"tls.crt": pem, "tls.key": key_pem(key), "ca.crt": pem})
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "cacerts", "namespace": "istio-system"},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in files.items()}}, pem


@pytest.mark.parametrize("kind", ["istio", "tls"])
def test_plugged_in_cacerts_wins_over_istio_ca_secret(api, client, core, tmp_path, kind):
    provider(client, tmp_path / "before")  # istio-ca-secret exists now
    secret, root = plugged_in(kind)
    api.seed(secret)
    assert provider(client, tmp_path / "after").trust_bundle() == root


def test_a_broken_cacerts_secret_fails_the_start_naming_it(api, client, tmp_path):
    secret, _ = plugged_in()
    secret["data"]["ca-key.pem"] = base64.b64encode(b"not a key").decode()
    api.seed(secret)
    with pytest.raises(istio_ca.CaSetupError, match="Secret istio-system/cacerts"):
        provider(client, tmp_path)


# -- TokenReview ----------------------------------------------------------------------------


def test_a_projected_token_is_its_service_account_and_pod(api, client):
    token = api.add_token(service_account("shop", "reviews", pod="reviews-v1-0",
                                          pod_uid="0b5e-uid"))
    identity = token_review.TokenReviewer(client).review(token, NOW)
    assert (identity.namespace, identity.service_account, identity.pod, identity.pod_uid) == (
        "shop", "reviews", "reviews-v1-0", "0b5e-uid")


@pytest.mark.parametrize(("user", "reason"), [
    (None, "did not authenticate the token: invalid bearer token"),
    (service_account("shop", "reviews", audiences=("other",)),
     "token audiences ['other'] is invalid for the target audiences ['istio-ca']"),
    (TokenUser("alice", audiences=("istio-ca",)), "belongs to 'alice', not to a service"),
])
def test_bad_tokens_are_refused_with_the_reason(api, client, user, reason):
    token = api.add_token(user) if user is not None else "made-up"
    with pytest.raises(CertError) as info:
        token_review.TokenReviewer(client).review(token, NOW)
    assert info.value.refusal is Refusal.UNAUTHENTICATED
    assert reason in str(info.value)


def jwt(exp: float) -> str:
    def part(value: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")
    return f"{part({'alg': 'RS256'})}.{part({'exp': int(exp)})}.c2ln"


def test_reviews_are_cached_but_never_past_the_tokens_expiry(api, client):
    token = api.add_token(service_account("shop", "reviews"), jwt(NOW + 30))
    reviewer = token_review.TokenReviewer(client)
    reviewer.review(token, NOW)
    reviewer.review(token, NOW + 20)
    assert reviewer.reviews == 1
    api.revoke_token(token)  # it expired: the API server no longer accepts it
    with pytest.raises(CertError, match="invalid bearer token"):
        reviewer.review(token, NOW + 31)
    assert reviewer.reviews == 2


def test_the_review_cache_is_bounded():
    cache = token_review.ReviewCache(seconds=60, entries=2)
    identity = token_review.identity_from({"status": {
        "authenticated": True, "user": {"username": "system:serviceaccount:a:b"}}})
    for token in ("t1", "t2", "t3"):
        cache.put(token, identity, NOW)
    assert len(cache) == 2 and cache.get("t1", NOW) is None and cache.get("t3", NOW)
    assert cache.get("t3", NOW + 61) is None


def test_an_unreachable_api_server_is_an_internal_error_not_a_bad_token(tmp_path):
    (tmp_path / "kubeconfig").write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "x"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    unreachable = kube_client.load(tmp_path / "kubeconfig")
    with pytest.raises(CertError, match="could not be reviewed") as info:
        token_review.TokenReviewer(unreachable).review("t", NOW)
    assert info.value.refusal is Refusal.INTERNAL


def test_the_node_token_path_stays_beside_token_review(api, client):
    private, public = tokens.generate_keypair()
    auth = Authenticator("cluster.local", public,
                         reviewer=token_review.TokenReviewer(client).review)
    node = tokens.issue(private, "shop", "ratings", "ratings-0", 600)
    now = time.time()
    assert auth.authenticate(Credentials((node,)), now).service_account == "ratings"
    kube = api.add_token(service_account("shop", "reviews"))
    assert auth.authenticate(Credentials((kube,)), now).service_account == "reviews"
    with pytest.raises(CertError, match=r"not the node's .*invalid bearer token"):
        auth.authenticate(Credentials(("made-up",)), now)


# -- the root published ---------------------------------------------------------------------


ROOT = "-----BEGIN CERTIFICATE-----\nroot\n-----END CERTIFICATE-----\n"


def root_in(core: kubernetes.client.CoreV1Api, namespace: str) -> str | None:
    try:
        cm = core.read_namespaced_config_map("istio-ca-root-cert", namespace)
    except ApiException as exc:
        assert exc.status == 404
        return None
    assert cm.metadata.labels == {"istio.io/config": "true"}
    return str(cm.data["root-cert.pem"])


def test_the_root_configmap_reaches_every_namespace_and_is_put_back(client, core):
    publisher = cluster_ca.RootPublisher(client, lambda: ROOT)
    publisher.reconcile()
    assert {ns: root_in(core, ns) for ns in ("default", "istio-system", "shop",
                                             "kube-system")} == {
        "default": ROOT, "istio-system": ROOT, "shop": ROOT, "kube-system": None}
    core.create_namespace({"metadata": {"name": "later"}})
    core.delete_namespaced_config_map("istio-ca-root-cert", "shop")
    core.patch_namespaced_config_map("istio-ca-root-cert", "default",
                                     {"data": {"root-cert.pem": "edited"}})
    publisher.reconcile()
    assert [root_in(core, ns) for ns in ("later", "shop", "default")] == [ROOT] * 3
    writes = publisher.writes
    publisher.reconcile()
    assert publisher.writes == writes  # nothing differs: nothing written


def test_the_webhooks_ca_bundle_is_kept_current(api, client):
    with kubernetes.config.new_client_from_config(str(api.kubeconfig)) as made:
        admission = kubernetes.client.AdmissionregistrationV1Api(made)
        publisher = cluster_ca.RootPublisher(client, lambda: ROOT)
        publisher.reconcile()  # not installed yet: skipped
        mutating, validating = webhook_configurations(base64.b64encode(b"stale").decode())
        admission.create_mutating_webhook_configuration(mutating)
        admission.create_validating_webhook_configuration(validating)
        publisher.reconcile()
        bundle = base64.b64encode(ROOT.encode())
        found = [admission.read_mutating_webhook_configuration("istio-sidecar-injector"),
                 admission.read_validating_webhook_configuration(
                     "istio-validator-istio-system")]
        assert {hook.client_config.ca_bundle.encode() if isinstance(
            hook.client_config.ca_bundle, str) else hook.client_config.ca_bundle
            for config in found for hook in config.webhooks} == {bundle}


def test_a_running_publisher_acts_on_watch_events_not_just_its_interval(api, client, core):
    publisher = cluster_ca.RootPublisher(client, lambda: ROOT, interval=3600)
    with anyio.from_thread.start_blocking_portal() as portal:
        future, _ = portal.start_task(publisher.run)
        assert root_in(core, "shop") == ROOT  # the first pass runs before it is started
        core.delete_namespaced_config_map("istio-ca-root-cert", "shop")
        core.create_namespace({"metadata": {"name": "later"}})
        wait_until(lambda: root_in(core, "shop") == ROOT and root_in(core, "later") == ROOT,
                   10, what="the ConfigMaps to be put back and made")
        with kubernetes.config.new_client_from_config(str(api.kubeconfig)) as made:
            admission = kubernetes.client.AdmissionregistrationV1Api(made)
            mutating, _ = webhook_configurations(base64.b64encode(b"stale").decode())
            admission.create_mutating_webhook_configuration(mutating)

            def patched() -> bool:
                found = admission.read_mutating_webhook_configuration("istio-sidecar-injector")
                return all(hook.client_config.ca_bundle != base64.b64encode(b"stale").decode()
                           for hook in found.webhooks)

            wait_until(patched, 10, what="the caBundle to be patched")
        future.cancel()


# -- decisions over data --------------------------------------------------------------------


def test_configmap_changes_skip_ignored_and_terminating_namespaces():
    namespaces = [{"metadata": {"name": name}} for name in ("a", "b", "kube-system")] + [
        {"metadata": {"name": "gone"}, "status": {"phase": "Terminating"}}]
    held = [{"metadata": {"namespace": "b", "labels": {}}, "data": {"root-cert.pem": ROOT}}]
    assert cluster_ca.configmap_changes(namespaces, held, ROOT) == \
        cluster_ca.ConfigMapChanges(create=("a",), fix=("b",))


def test_ca_bundle_patch_touches_only_stale_webhooks_and_tests_the_version():
    bundle = base64.b64encode(ROOT.encode()).decode()
    config = {"metadata": {"resourceVersion": "7"}, "webhooks": [
        {"clientConfig": {"caBundle": bundle}}, {"clientConfig": {}}]}
    assert cluster_ca.ca_bundle_patch(config, ROOT) == [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "7"},
        {"op": "add", "path": "/webhooks/1/clientConfig/caBundle", "value": bundle}]
    config["webhooks"][1]["clientConfig"]["caBundle"] = bundle
    assert cluster_ca.ca_bundle_patch(config, ROOT) == []


def test_a_publisher_keeps_only_its_parts(api, client, core):
    """The leader's publisher keeps the ConfigMaps, every replica's the caBundle."""
    with kubernetes.config.new_client_from_config(str(api.kubeconfig)) as made:
        admission = kubernetes.client.AdmissionregistrationV1Api(made)
        mutating, _ = webhook_configurations(base64.b64encode(b"stale").decode())
        admission.create_mutating_webhook_configuration(mutating)
        webhooks = cluster_ca.RootPublisher(client, lambda: ROOT, parts=frozenset({"webhooks"}))
        assert [path for path, _ in webhooks.watched()] == [
            f"{cluster_ca.WEBHOOKS}/mutatingwebhookconfigurations",
            f"{cluster_ca.WEBHOOKS}/validatingwebhookconfigurations"]
        webhooks.reconcile()
        assert root_in(core, "shop") is None
        hook = admission.read_mutating_webhook_configuration("istio-sidecar-injector")
        assert base64.b64decode(hook.webhooks[0].client_config.ca_bundle).decode() == ROOT
        configmaps = cluster_ca.RootPublisher(client, lambda: ROOT,
                                              parts=frozenset({"configmaps"}))
        assert [path for path, _ in configmaps.watched()] == ["/api/v1/namespaces",
                                                              "/api/v1/configmaps"]
        configmaps.reconcile()
        assert root_in(core, "shop") == ROOT


def test_the_root_waits_for_an_api_server_that_is_not_up_yet(tmp_path, caplog):
    """A replica started before its API server answers retries, with backoff, then takes
    the root (here: the server comes up during the third wait); one that never answers
    gives up after the wait, naming the server."""
    from pilotfish.testing.processes import free_port

    port = free_port()
    (tmp_path / "kubeconfig").write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "u", "user": {"token": "x"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    late = kube_client.load(tmp_path / "kubeconfig")
    waits: list[float] = []
    with anyio.from_thread.start_blocking_portal() as portal:
        api = FakeKubeApi(tmp_path / "api", tls=False)
        api.token = api.add_token(TokenUser("admin"), "x")

        def sleep(seconds: float) -> None:
            waits.append(seconds)
            if len(waits) == 3:  # the API server comes up
                portal.start_task_soon(api.serve, f"127.0.0.1:{port}")
                wait_until(lambda: api.port, 5)

        api.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}})
        store = cluster_ca.SecretRootStore(late, sleep=sleep)
        _, origin = store.load_or_create(lambda: {"root-cert.pem": "ROOT"})
        assert origin.endswith("(new self-signed root)") and len(waits) == 3
        assert waits[0] < waits[2]  # backing off
        assert "did not answer GET" in caplog.text
        portal.call(portal.stop, True)
    gone = cluster_ca.SecretRootStore(late, wait=1.0, sleep=lambda s: None)
    with pytest.raises(cluster_ca.CaSetupError, match=f"127.0.0.1:{port}"):
        gone.load_or_create(lambda: {})
