"""Admission webhooks, called as kube-apiserver calls them.

For a create, update or delete, every Mutating- then ValidatingWebhookConfiguration's
webhooks are matched against the request (rules: operations, apiGroups, apiVersions,
resources with subresources and scope; namespaceSelector against the namespace's labels;
objectSelector against the object's or the old object's labels). Each match gets an
``AdmissionReview`` (admission.k8s.io/v1) POSTed over HTTPS, the server's certificate
verified against the webhook's ``caBundle`` for the name ``SERVICE.NAMESPACE.svc`` (or the
URL's host). A mutating webhook's base64 JSON patch is applied before the next webhook sees
the object; a refusal becomes the request's answer (``admission webhook "NAME" denied the
request: MESSAGE``). A webhook that cannot be called, or answers nonsense, fails the request
unless its ``failurePolicy`` is Ignore.

Services have no addresses here: the server resolves ``clientConfig.service`` through the
test's mapping of (namespace, name) to ``HOST:PORT``.
"""

from __future__ import annotations

import base64
import binascii
import json
import ssl
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from pilotfish.core import http_client
from pilotfish.testing.kube import errors, selectors
from pilotfish.testing.kube.patches import PatchError, json_patch
from pilotfish.testing.kube.resources import ResourceType


@attrs.frozen
class Attributes:
    """What is being admitted."""

    operation: str  # CREATE, UPDATE, DELETE
    rtype: ResourceType
    subresource: str
    namespace: str
    name: str
    object: dict[str, Any] | None
    old: dict[str, Any] | None
    user: dict[str, Any]
    dry_run: bool = False


def _one_of(values: Sequence[str] | None, value: str) -> bool:
    return bool(values) and ("*" in (values or ()) or value in (values or ()))


def rule_matches(rule: Mapping[str, Any], request: Attributes) -> bool:
    rtype = request.rtype
    if not _one_of(rule.get("operations"), request.operation):
        return False
    if not (_one_of(rule.get("apiGroups"), rtype.group)
            and _one_of(rule.get("apiVersions"), rtype.version)):
        return False
    scope = rule.get("scope") or "*"
    if scope != "*" and (scope == "Namespaced") != rtype.namespaced:
        return False
    wanted = f"{rtype.plural}/{request.subresource}" if request.subresource else rtype.plural
    for resource in rule.get("resources") or ():
        if resource in ("*/*", wanted):
            return True
        main, _, sub = resource.partition("/")
        if sub:
            if (main == "*" and sub == request.subresource) or \
                    (main == rtype.plural and sub == "*" and request.subresource):
                return True
        elif main == "*" and not request.subresource:
            return True
    return False


def webhook_matches(webhook: Mapping[str, Any], request: Attributes,
                    namespace_labels: Mapping[str, str] | None) -> bool:
    if not any(rule_matches(rule, request) for rule in webhook.get("rules") or ()):
        return False
    in_namespace = selectors.from_label_selector(webhook.get("namespaceSelector"))
    if request.rtype.plural == "namespaces" and not request.rtype.group:
        labels = _labels(request.object) or _labels(request.old)
        if not selectors.matches(in_namespace, labels):
            return False
    elif request.rtype.namespaced and not selectors.matches(in_namespace, namespace_labels):
        return False
    on_object = selectors.from_label_selector(webhook.get("objectSelector"))
    return any(selectors.matches(on_object, _labels(obj))
               for obj in (request.object, request.old) if obj is not None)


def _labels(obj: Mapping[str, Any] | None) -> dict[str, str]:
    return dict(((obj or {}).get("metadata") or {}).get("labels") or {})


def review(request: Attributes, uid: str) -> dict[str, Any]:
    """The AdmissionReview request body."""
    rtype = request.rtype
    kind = {"group": rtype.group, "version": rtype.version, "kind": rtype.kind}
    resource = {"group": rtype.group, "version": rtype.version, "resource": rtype.plural}
    options = {"CREATE": "CreateOptions", "UPDATE": "UpdateOptions",
               "DELETE": "DeleteOptions"}[request.operation]
    body: dict[str, Any] = {
        "uid": uid, "kind": kind, "resource": resource, "requestKind": kind,
        "requestResource": resource, "name": request.name, "namespace": request.namespace,
        "operation": request.operation, "userInfo": request.user,
        "object": request.object, "oldObject": request.old, "dryRun": request.dry_run,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": options},
    }
    if request.subresource:
        body["subResource"] = request.subresource
        body["requestSubResource"] = request.subresource
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": body}


class WebhookCallError(Exception):
    """The webhook could not be called, or its answer was not an AdmissionReview."""


Resolve = Callable[[str, str], str | None]  # (namespace, name) → "host:port"


def _target(client: Mapping[str, Any], resolve: Resolve) -> tuple[str, str]:
    """(URL to connect to, name the certificate must carry)."""
    if client.get("url"):
        url = str(client["url"])
        return url, http_client.split_url(url, "https")[0]
    service = client.get("service") or {}
    namespace, name = service.get("namespace", ""), service.get("name", "")
    address = resolve(namespace, name)
    if address is None:
        raise WebhookCallError(f'service "{namespace}/{name}" has no address for this test '
                               f'server (map it with set_service_address)')
    path = service.get("path") or "/"
    return f"https://{address}{path}", f"{name}.{namespace}.svc"


def _context(client: Mapping[str, Any]) -> ssl.SSLContext:
    context = ssl.create_default_context()
    bundle = client.get("caBundle")
    if bundle:
        try:
            context.load_verify_locations(cadata=base64.b64decode(bundle).decode())
        except (binascii.Error, ValueError, ssl.SSLError) as exc:
            raise WebhookCallError(f"caBundle: {exc}") from None
    return context


async def call(webhook: Mapping[str, Any], request: Attributes, resolve: Resolve
               ) -> dict[str, Any]:
    """POST the review; returns the response's ``response`` member."""
    if "v1" not in (webhook.get("admissionReviewVersions") or ()):
        raise WebhookCallError("none of the admissionReviewVersions is v1")
    client = webhook.get("clientConfig") or {}
    url, server_name = _target(client, resolve)
    uid = str(uuid.uuid4())
    try:
        reply = await http_client.request(
            url, "POST", timeout=float(webhook.get("timeoutSeconds") or 10),
            headers=[("Content-Type", "application/json"), ("Accept", "application/json")],
            body=json.dumps(review(request, uid)).encode(), ssl_context=_context(client),
            server_name=server_name)
    except http_client.HttpClientError as exc:
        raise WebhookCallError(f'failed to call webhook: Post "{url}": {exc.reason}') from None
    if reply.status != 200:
        raise WebhookCallError(f"received status {reply.status} from {url}")
    try:
        answer = json.loads(reply.body)
        response = answer["response"]
    except (ValueError, KeyError, TypeError):
        raise WebhookCallError(f"the answer from {url} is not an AdmissionReview") from None
    if (answer.get("apiVersion"), answer.get("kind")) != ("admission.k8s.io/v1",
                                                          "AdmissionReview"):
        raise WebhookCallError(f"expected webhook response of admission.k8s.io/v1, "
                               f"Kind=AdmissionReview, got {answer.get('apiVersion')}, "
                               f"Kind={answer.get('kind')}")
    if response.get("uid") != uid:
        raise WebhookCallError(f"expected response.uid={uid!r}, got {response.get('uid')!r}")
    return dict(response)


def denied(name: str, response: Mapping[str, Any]) -> errors.ApiError:
    status = response.get("status") or {}
    code = max(int(status.get("code") or 0), 400)
    text = status.get("message") or status.get("reason")
    prefix = f'admission webhook "{name}" denied the request'
    message = f"{prefix}: {text}" if text else f"{prefix} without explanation"
    return errors.ApiError(code, status.get("reason") or "", message, status.get("details"))


def mutate(obj: dict[str, Any], name: str, response: Mapping[str, Any]) -> dict[str, Any]:
    """The object with a mutating webhook's JSON patch applied."""
    if not response.get("patch"):
        return obj
    if response.get("patchType", "JSONPatch") != "JSONPatch":
        raise WebhookCallError(f"unsupported patchType {response.get('patchType')!r}")
    try:
        operations = json.loads(base64.b64decode(response["patch"]))
        patched: dict[str, Any] = json_patch(obj, operations)
    except (binascii.Error, ValueError, PatchError) as exc:
        raise WebhookCallError(f'webhook "{name}": its patch cannot be applied: {exc}'
                               ) from None
    return patched


async def admit(configurations: Sequence[Mapping[str, Any]], mutating: bool,
                request: Attributes, namespace_labels: Mapping[str, str] | None,
                resolve: Resolve) -> dict[str, Any] | None:
    """Run the configurations' webhooks in order (configurations by name); returns the
    object, mutated when ``mutating``; raises the refusal as an ``ApiError``."""
    current = request
    for configuration in sorted(configurations, key=lambda c: c["metadata"]["name"]):
        for webhook in configuration.get("webhooks") or ():
            if not webhook_matches(webhook, current, namespace_labels):
                continue
            name = webhook.get("name", "")
            try:
                response = await call(webhook, current, resolve)
                if not response.get("allowed"):
                    raise denied(name, response)
                if mutating and current.object is not None:
                    current = attrs.evolve(current, object=mutate(current.object, name,
                                                                  response))
            except WebhookCallError as exc:
                if webhook.get("failurePolicy", "Fail") == "Ignore":
                    continue
                raise errors.internal(f'failed calling webhook "{name}": {exc}') from None
    return current.object
