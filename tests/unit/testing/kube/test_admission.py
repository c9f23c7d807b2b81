"""The fake Kubernetes API server's TokenReview and admission webhooks, driven by the
official `kubernetes` client; the webhooks are a small HTTPS server of the test's own,
verified against the caBundle as kube-apiserver verifies them."""

from __future__ import annotations

import base64
import functools
import json
import ssl
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import urllib3
from kubernetes.client import ApiException

from pilotfish.testing.certs import ca_signed
from pilotfish.testing.kube import FakeKubeApi, TokenUser, service_account

HOOK = "hook.webhooks.svc"  # the name of Service webhooks/hook, as certificates carry it


class Webhook(ThreadingHTTPServer):
    """Answers AdmissionReviews on /mutate (adds a label) and /validate (refuses config
    maps with a `forbidden` key); keeps every review it got."""

    def __init__(self, directory: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        ca, cert, key = ca_signed(HOOK, ips=["127.0.0.1"])
        (directory / "hook.crt").write_bytes(cert)
        (directory / "hook.key").write_bytes(key)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(directory / "hook.crt", directory / "hook.key")
        self.socket = context.wrap_socket(self.socket, server_side=True)
        self.ca_bundle = base64.b64encode(ca).decode()
        self.reviews: list[dict[str, Any]] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    def answer(self, path: str, request: dict[str, Any]) -> dict[str, Any]:
        if path == "/mutate":
            patch = [{"op": "add", "path": "/metadata/labels/injected", "value": "yes"}]
            return {"allowed": True, "patchType": "JSONPatch",
                    "patch": base64.b64encode(json.dumps(patch).encode()).decode()}
        if "forbidden" in ((request.get("object") or {}).get("data") or {}):
            return {"allowed": False, "status": {"code": 403, "reason": "Forbidden",
                                                 "message": "the key forbidden is reserved"}}
        return {"allowed": True}


class _Handler(BaseHTTPRequestHandler):
    server: Webhook

    def do_POST(self) -> None:
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.reviews.append(review)
        response = {"uid": review["request"]["uid"],
                    **self.server.answer(self.path, review["request"])}
        body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                           "response": response}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook(tmp_path: Path, api: FakeKubeApi) -> Iterator[Webhook]:
    server = Webhook(tmp_path)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    api.set_service_address("webhooks", "hook", server.address)
    try:
        yield server
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def refusal(call: Callable[[], Any]) -> tuple[int, dict[str, Any]]:
    with pytest.raises(ApiException) as caught:
        call()
    return caught.value.status, json.loads(caught.value.body)


def configuration(kind: str, hook: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
            "metadata": {"name": hook["name"]},
            "webhooks": [{"admissionReviewVersions": ["v1"], "sideEffects": "None", **hook}]}


def service(path: str, ca_bundle: str) -> dict[str, Any]:
    return {"service": {"namespace": "webhooks", "name": "hook", "path": path},
            "caBundle": ca_bundle}


def pod(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"app": name}},
            "spec": {"containers": [{"name": "app", "image": "app:1"}]}}


def test_a_token_review_answers_for_the_audiences_asked(api, client):
    token = api.add_token(service_account("shop", "web", pod="web-1", pod_uid="uid-1",
                                          audiences=["istio-ca"]))
    reviews = kubernetes.client.AuthenticationV1Api(client)

    def review(token: str, *audiences: str) -> Any:
        spec: dict[str, Any] = {"token": token}
        if audiences:
            spec["audiences"] = list(audiences)
        return reviews.create_token_review({"spec": spec}).status

    good = review(token, "istio-ca", "elsewhere")
    assert good.authenticated and good.audiences == ["istio-ca"]
    assert good.user.username == "system:serviceaccount:shop:web"
    assert "system:serviceaccounts:shop" in good.user.groups
    assert good.user.extra["authentication.kubernetes.io/pod-name"] == ["web-1"]
    assert good.user.extra["authentication.kubernetes.io/pod-uid"] == ["uid-1"]

    wrong = review(token, "someone-else")
    assert not wrong.authenticated and "audiences" in wrong.error
    assert not review(token).authenticated  # no audience: the API server's own
    assert not review("made-up", "istio-ca").authenticated


def test_a_registered_token_for_the_api_authenticates_its_requests(api, tmp_path):
    token = api.add_token(TokenUser("controller", groups=("system:authenticated",)))
    configuration = kubernetes.client.Configuration()
    configuration.host = api.url
    configuration.ssl_ca_cert = str(api.directory / "ca.crt")
    configuration.api_key = {"BearerToken": token}
    configuration.api_key_prefix = {"BearerToken": "Bearer"}
    with kubernetes.client.ApiClient(configuration) as own:
        names = kubernetes.client.CoreV1Api(own).list_namespace().items
    assert "default" in [n.metadata.name for n in names]
    api.revoke_token(token)
    with kubernetes.client.ApiClient(configuration) as own:
        code, _ = refusal(lambda: kubernetes.client.CoreV1Api(own).list_namespace())
    assert code == 401


def test_a_mutating_webhook_patches_what_its_selectors_and_rules_match(api, client, core,
                                                                       webhook):
    admission = kubernetes.client.AdmissionregistrationV1Api(client)
    admission.create_mutating_webhook_configuration(configuration(
        "MutatingWebhookConfiguration", {
            "name": "inject.example.com", "clientConfig": service("/mutate",
                                                                  webhook.ca_bundle),
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                       "resources": ["pods"], "scope": "Namespaced"}],
            "namespaceSelector": {"matchLabels": {"inject": "enabled"}},
            "objectSelector": {"matchExpressions": [
                {"key": "skip", "operator": "DoesNotExist"}]}}))
    core.create_namespace({"metadata": {"name": "on", "labels": {"inject": "enabled"}}})
    core.create_namespace({"metadata": {"name": "off"}})

    injected = core.create_namespaced_pod("on", pod("a"))
    assert injected.metadata.labels == {"app": "a", "injected": "yes"}
    assert core.create_namespaced_pod("off", pod("b")).metadata.labels == {"app": "b"}
    skipped = {**pod("c"), "metadata": {"name": "c", "labels": {"skip": "1"}}}
    assert "injected" not in core.create_namespaced_pod("on", skipped).metadata.labels
    core.patch_namespaced_pod("a", "on", {"metadata": {"labels": {"more": "1"}}})  # UPDATE
    core.create_namespaced_config_map("on", {"metadata": {"name": "cm"}})  # not a pod

    [review] = webhook.reviews
    request = review["request"]
    assert (review["apiVersion"], review["kind"]) == ("admission.k8s.io/v1", "AdmissionReview")
    assert (request["operation"], request["namespace"], request["name"]) == ("CREATE", "on",
                                                                            "a")
    assert request["kind"] == {"group": "", "version": "v1", "kind": "Pod"}
    assert request["resource"] == {"group": "", "version": "v1", "resource": "pods"}
    assert request["userInfo"]["username"] == "kubernetes-admin"
    assert request["object"]["metadata"]["uid"] and request["oldObject"] is None


def test_a_validating_webhook_refuses_with_its_message(api, client, core, webhook):
    kubernetes.client.AdmissionregistrationV1Api(client).create_validating_webhook_configuration(
        configuration("ValidatingWebhookConfiguration", {
            "name": "reserved.example.com",
            "clientConfig": {"url": f"https://{webhook.address}/validate",
                             "caBundle": webhook.ca_bundle},
            "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": ["*"],
                       "apiVersions": ["*"], "resources": ["configmaps"]}]}))
    core.create_namespaced_config_map("default", {"metadata": {"name": "ok"},
                                                  "data": {"fine": "1"}})
    code, status = refusal(lambda: core.create_namespaced_config_map(
        "default", {"metadata": {"name": "bad"}, "data": {"forbidden": "1"}}))
    assert (code, status["reason"]) == (403, "Forbidden")
    assert status["message"] == ('admission webhook "reserved.example.com" denied the '
                                 'request: the key forbidden is reserved')
    code, _ = refusal(lambda: core.patch_namespaced_config_map(
        "ok", "default", {"data": {"forbidden": "1"}}))
    assert code == 403
    assert core.read_namespaced_config_map("ok", "default").data == {"fine": "1"}
    update = webhook.reviews[-1]["request"]
    assert update["operation"] == "UPDATE" and update["oldObject"]["data"] == {"fine": "1"}
    code, _ = refusal(lambda: core.read_namespaced_config_map("bad", "default"))
    assert code == 404


@pytest.mark.parametrize("policy", ["Fail", "Ignore"])
def test_a_webhook_that_cannot_be_called_fails_the_request_unless_ignored(
        api, client, core, webhook, tmp_path, policy):
    other_ca, _, _ = ca_signed(HOOK)
    admission = kubernetes.client.AdmissionregistrationV1Api(client)
    for name, client_config in [
            ("untrusted.example.com", service("/validate", base64.b64encode(other_ca).decode())),
            ("unmapped.example.com", {"service": {"namespace": "webhooks", "name": "absent"},
                                      "caBundle": webhook.ca_bundle})]:
        admission.create_validating_webhook_configuration(configuration(
            "ValidatingWebhookConfiguration", {
                "name": name, "clientConfig": client_config, "failurePolicy": policy,
                "rules": [{"operations": ["CREATE"], "apiGroups": [""],
                           "apiVersions": ["v1"], "resources": ["secrets"]}]}))
        secret = {"metadata": {"name": name.split(".")[0]}}
        if policy == "Ignore":
            core.create_namespaced_secret("default", secret)
            continue
        code, status = refusal(functools.partial(core.create_namespaced_secret, "default",
                                                 secret))
        assert (code, status["reason"]) == (500, "InternalError")
        assert f'failed calling webhook "{name}"' in status["message"]
        why = "CERTIFICATE_VERIFY_FAILED" if name.startswith("untrusted") else "no address"
        assert why in status["message"]
        admission.delete_validating_webhook_configuration(name)
    assert webhook.reviews == []  # the untrusted one was never sent its review


def test_a_token_request_gives_a_pod_bound_token_the_review_accepts(api, client):
    """What a kubelet asks for a pod's projected token (``serviceaccounts/NAME/token``)."""
    core = kubernetes.client.CoreV1Api(client)
    reviews = kubernetes.client.AuthenticationV1Api(client)
    made = core.create_namespaced_service_account_token("web", "shop", {
        "spec": {"audiences": ["istio-ca"], "expirationSeconds": 600,
                 "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "web-1",
                                    "uid": "uid-1"}}})
    assert made.status.token and made.status.expiration_timestamp
    status = reviews.create_token_review({"spec": {"token": made.status.token,
                                                   "audiences": ["istio-ca"]}}).status
    assert status.authenticated and status.user.username == "system:serviceaccount:shop:web"
    assert status.user.extra["authentication.kubernetes.io/pod-name"] == ["web-1"]
    assert not reviews.create_token_review({"spec": {"token": made.status.token}}
                                           ).status.authenticated  # not for the API server
    raw = urllib3.PoolManager(ca_certs=str(api.directory / "ca.crt"))
    read = raw.request("GET", f"{api.url}/api/v1/namespaces/shop/serviceaccounts/web/token",
                       headers={"Authorization": f"Bearer {api.token}"})
    assert read.status == 405
    nonsense = raw.request(
        "POST", f"{api.url}/api/v1/namespaces/shop/serviceaccounts/web/token", body=b"[]",
        headers={"Authorization": f"Bearer {api.token}", "Content-Type": "application/json"})
    assert nonsense.status == 400
