"""Which pods get a sidecar, and the webhook configurations that send them to discovery.

Two stages, as in Istio:

- **selection** by the MutatingWebhookConfiguration's selectors, evaluated by the API
  server: a namespace labelled ``istio-injection=enabled`` (default revision), or
  ``istio.io/rev=REV`` without ``istio-injection``; or, in a namespace with neither, a pod
  labelled ``sidecar.istio.io/inject=true`` (default revision) or ``istio.io/rev=REV``. A pod
  labelled ``sidecar.istio.io/inject=false`` is never selected. ``webhook_configurations``
  writes these selectors and ``selected`` evaluates the very same ones;
- **the injector's own check** (``injection_required``): not with ``hostNetwork``, not in
  Kubernetes' own namespaces; then the pod's ``sidecar.istio.io/inject`` label (else
  annotation) when it says ``true`` or ``false``; else ``neverInjectSelector``, then
  ``alwaysInjectSelector``; else the policy (``global.proxy.autoInject``: enabled).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pilotfish.core.pod_owner import pod_owner
from pilotfish.discovery.inject.settings import Settings

INJECT = "sidecar.istio.io/inject"
NAMESPACE_LABEL = "istio-injection"
REVISION_LABEL = "istio.io/rev"
# What owns a pod, as Istio guesses it (the template's ``Workload``).
workload_of = pod_owner
IGNORED_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease",
                                "local-path-storage"})


def matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) against labels; an
    empty or absent selector matches everything."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or ():
        key, operator = expression.get("key"), expression.get("operator")
        values = [str(v) for v in expression.get("values") or ()]
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def _expression(key: str, operator: str, *values: str) -> dict[str, Any]:
    out: dict[str, Any] = {"key": key, "operator": operator}
    if values:
        out["values"] = list(values)
    return out


def injection_webhooks(revision: str = "", enable_namespaces_by_default: bool = False
                       ) -> list[dict[str, Any]]:
    """The selectors of Istio's injection webhooks for a revision (``""``: default)."""
    rev = revision or "default"

    def not_false() -> dict[str, Any]:
        return _expression(INJECT, "NotIn", "false")

    hooks = [
        {"name": "rev.namespace.sidecar-injector.istio.io",
         "namespaceSelector": {"matchExpressions": [
             _expression(REVISION_LABEL, "In", rev),
             _expression(NAMESPACE_LABEL, "DoesNotExist")]},
         "objectSelector": {"matchExpressions": [not_false()]}},
        {"name": "rev.object.sidecar-injector.istio.io",
         "namespaceSelector": {"matchExpressions": [
             _expression(REVISION_LABEL, "DoesNotExist"),
             _expression(NAMESPACE_LABEL, "DoesNotExist")]},
         "objectSelector": {"matchExpressions": [
             not_false(), _expression(REVISION_LABEL, "In", rev)]}},
    ]
    if rev == "default":
        hooks += [
            {"name": "namespace.sidecar-injector.istio.io",
             "namespaceSelector": {"matchExpressions": [
                 _expression(NAMESPACE_LABEL, "In", "enabled")]},
             "objectSelector": {"matchExpressions": [not_false()]}},
            {"name": "object.sidecar-injector.istio.io",
             "namespaceSelector": {"matchExpressions": [
                 _expression(NAMESPACE_LABEL, "DoesNotExist"),
                 _expression(REVISION_LABEL, "DoesNotExist")]},
             "objectSelector": {"matchExpressions": [
                 _expression(INJECT, "In", "true"),
                 _expression(REVISION_LABEL, "DoesNotExist")]}},
        ]
        if enable_namespaces_by_default:
            hooks.append({
                "name": "auto.sidecar-injector.istio.io",
                "namespaceSelector": {"matchExpressions": [
                    _expression(NAMESPACE_LABEL, "DoesNotExist"),
                    _expression(REVISION_LABEL, "DoesNotExist"),
                    _expression("kubernetes.io/metadata.name", "NotIn",
                                *sorted(IGNORED_NAMESPACES))]},
                "objectSelector": {"matchExpressions": [
                    not_false(), _expression(REVISION_LABEL, "DoesNotExist")]}})
    return hooks


def selected(namespace_labels: Mapping[str, str], pod_labels: Mapping[str, str],
             revision: str = "", enable_namespaces_by_default: bool = False) -> bool:
    """Whether the API server would send this pod to the revision's injector."""
    return any(matches(hook["namespaceSelector"], namespace_labels)
               and matches(hook["objectSelector"], pod_labels)
               for hook in injection_webhooks(revision, enable_namespaces_by_default))


def explicit_choice(pod: Mapping[str, Any]) -> bool | None:
    """The pod's own ``sidecar.istio.io/inject``: the label if it has one, else the
    annotation; ``None`` unless it says true or false."""
    metadata = pod.get("metadata") or {}
    labels, annotations = metadata.get("labels") or {}, metadata.get("annotations") or {}
    choice = str(labels[INJECT] if INJECT in labels else annotations.get(INJECT, ""))
    return {"true": True, "false": False}.get(choice.lower())


def injection_required(pod: Mapping[str, Any], namespace: str, settings: Settings
                       ) -> tuple[bool, str]:
    """(inject?, why not: a phrase to follow the pod's name) — the injector's check once
    the webhook was called."""
    spec = pod.get("spec") or {}
    if spec.get("hostNetwork"):
        return False, "has host networking enabled"
    if namespace in IGNORED_NAMESPACES:
        return False, f"is in namespace {namespace}, one of Kubernetes' own"
    choice = explicit_choice(pod)
    if choice is not None:
        return choice, "" if choice else f"says {INJECT}: false"
    labels = (pod.get("metadata") or {}).get("labels") or {}
    for selector in settings.value("sidecarInjectorWebhook.neverInjectSelector") or ():
        if selector and matches(selector, labels):
            return False, "matches a neverInjectSelector"
    for selector in settings.value("sidecarInjectorWebhook.alwaysInjectSelector") or ():
        if selector and matches(selector, labels):
            return True, ""
    policy = settings.text("global.proxy.autoInject")
    if policy == "enabled":
        return True, ""
    return False, f"is left out by the injection policy ({policy or 'off'})"


def webhook_configurations(ca_bundle: str, settings: Settings | None = None, *,
                           namespace: str = "istio-system", url: str = ""
                           ) -> list[dict[str, Any]]:
    """The MutatingWebhookConfiguration (``/inject``) and ValidatingWebhookConfiguration
    (``/validate``) that send pods and Istio config to discovery: Service
    ``istiod[-REV].NAMESPACE`` on port 443, or ``url`` (``https://HOST:PORT``) when given;
    ``ca_bundle`` is the base64 PEM of the root discovery's serving certificate chains to."""
    settings = settings or Settings.create()
    rev = settings.revision
    suffix = f"-{rev}" if rev else ""

    def client(path: str) -> dict[str, Any]:
        target: dict[str, Any] = {"url": url.rstrip("/") + path} if url else {
            "service": {"name": f"istiod{suffix}", "namespace": namespace, "path": path,
                        "port": 443}}
        return {**target, "caBundle": ca_bundle}

    hooks = [{**hook, "clientConfig": client("/inject"),
              "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                         "resources": ["pods"]}],
              "failurePolicy": "Fail", "sideEffects": "None",
              "reinvocationPolicy": "Never", "admissionReviewVersions": ["v1"]}
             for hook in injection_webhooks(rev, settings.flag(
                 "sidecarInjectorWebhook.enableNamespacesByDefault"))]
    validating: dict[str, Any] = {
        "name": "rev.validation.istio.io", "clientConfig": client("/validate"),
        "rules": [{"operations": ["CREATE", "UPDATE"],
                   "apiGroups": ["security.istio.io", "networking.istio.io",
                                 "telemetry.istio.io", "extensions.istio.io"],
                   "apiVersions": ["*"], "resources": ["*"]}],
        # Istio installs Ignore and turns it to Fail once istiod serves; these are written
        # for a discovery that serves already.
        "failurePolicy": "Fail", "sideEffects": "None", "admissionReviewVersions": ["v1"]}
    if rev:
        validating["objectSelector"] = {"matchExpressions": [
            _expression(REVISION_LABEL, "In", rev)]}
    labels = {"istio.io/rev": rev or "default", "app": "sidecar-injector"}
    return [
        {"apiVersion": "admissionregistration.k8s.io/v1",
         "kind": "MutatingWebhookConfiguration",
         "metadata": {"name": f"istio-sidecar-injector{suffix}", "labels": labels},
         "webhooks": hooks},
        {"apiVersion": "admissionregistration.k8s.io/v1",
         "kind": "ValidatingWebhookConfiguration",
         "metadata": {"name": f"istio-validator{suffix}-{namespace}",
                      "labels": {**labels, "app": "istiod"}},
         "webhooks": [validating]},
    ]

