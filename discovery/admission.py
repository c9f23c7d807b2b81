"""Admission reviews (``admission.k8s.io/v1``), sans-IO: a request body in, an answer out.

``parse`` reads the review and refuses one that is not well formed with ``ReviewError``,
whose message names the field (the server answers 400 with it). ``inject`` answers a Pod's
review with the JSON patch that adds its sidecar (base64, ``patchType: JSONPatch``), or
lets it pass unchanged when it is not to be injected; an injection that fails (a bad
annotation) is a refusal naming the annotation. ``validate`` answers an Istio config
object's review with what ``pilotfish validate`` says about it: errors refuse it
(``configuration is invalid: ...``), warnings are returned as the review's warnings.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from pilotfish.core.objects import ConfigObject, Source
from pilotfish.core.store import ConfigError
from pilotfish.discovery.inject import policy
from pilotfish.discovery.inject.jsonpatch import create_patch
from pilotfish.discovery.inject.pod import Request, inject
from pilotfish.discovery.inject.settings import InjectionError, Settings

API_VERSIONS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")
KIND = "AdmissionReview"


class ReviewError(ValueError):
    """The review itself is malformed; the message names the field."""


@attrs.frozen
class Review:
    api_version: str
    uid: str
    kind: Mapping[str, Any]  # group, version, kind of the object
    namespace: str
    operation: str
    object: Mapping[str, Any] | None
    old_object: Mapping[str, Any] | None


def parse(body: bytes) -> Review:
    if not body.strip():
        raise ReviewError("request body: empty; expected an AdmissionReview")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ReviewError(f"request body: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ReviewError("request body: expected an AdmissionReview object")
    if data.get("kind") != KIND:
        raise ReviewError(f"kind: expected {KIND}, got {data.get('kind')!r}")
    if data.get("apiVersion") not in API_VERSIONS:
        raise ReviewError(f"apiVersion: expected one of {', '.join(API_VERSIONS)}, got "
                          f"{data.get('apiVersion')!r}")
    request = data.get("request")
    if not isinstance(request, dict):
        raise ReviewError("request: required (an AdmissionRequest object)")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise ReviewError("request.uid: required (a non-empty string)")
    kind = request.get("kind") or {}
    if not isinstance(kind, dict):
        raise ReviewError("request.kind: expected {group, version, kind}")
    operation = request.get("operation")
    if not isinstance(operation, str) or not operation:
        raise ReviewError("request.operation: required (CREATE, UPDATE, DELETE or CONNECT)")
    namespace = request.get("namespace") or ""
    if not isinstance(namespace, str):
        raise ReviewError("request.namespace: expected a string")
    objects = []
    for field in ("object", "oldObject"):
        value = request.get(field)
        if value is not None and not isinstance(value, dict):
            raise ReviewError(f"request.{field}: expected an object, got "
                              f"{type(value).__name__}")
        if value is not None and not isinstance(value.get("metadata", {}), dict):
            raise ReviewError(f"request.{field}.metadata: expected an object")
        objects.append(value)
    if operation in ("CREATE", "UPDATE") and objects[0] is None:
        raise ReviewError(f"request.object: required for {operation}")
    return Review(str(data["apiVersion"]), uid, kind, namespace, operation, *objects)


def answer(review: Review, allowed: bool, *, message: str = "",
           patch: Sequence[Mapping[str, Any]] | None = None, warnings: Sequence[str] = (),
           code: int = 400) -> dict[str, Any]:
    """The AdmissionReview that answers ``review``."""
    response: dict[str, Any] = {"uid": review.uid, "allowed": allowed}
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(list(patch)).encode()).decode()
    if message:
        response["status"] = {"message": message, **({} if allowed else {"code": code})}
    if warnings:
        response["warnings"] = list(warnings)
    return {"apiVersion": review.api_version, "kind": KIND, "response": response}


# -- /inject ------------------------------------------------------------------------------

def parse_inject_path(path: str) -> dict[str, str]:
    """Proxy environment named in the webhook's path, as Istio reads it:
    ``/inject/cluster/C/net/N`` (``--slash--`` for ``/``; ``cluster`` and ``net`` name
    ``ISTIO_META_CLUSTER_ID`` and ``ISTIO_META_NETWORK``, other keys are upper-cased), or
    ``/inject/:ENV:cluster=C:ENV:net=N``."""
    rest = path.strip("/").removeprefix("inject").strip("/")
    pairs: list[tuple[str, str]] = []
    if rest.startswith(":ENV:"):
        for item in rest.split(":ENV:")[1:]:
            key, sep, value = item.partition("=")
            if sep and key and value:
                pairs.append((key, value))
    else:
        parts = [p for p in rest.split("/") if p]
        pairs = [(parts[i], parts[i + 1].replace("--slash--", "/"))
                 for i in range(0, len(parts) - 1, 2)]
    names = {"cluster": "ISTIO_META_CLUSTER_ID", "net": "ISTIO_META_NETWORK"}
    return {names.get(key, key.upper()): value for key, value in pairs}


def inject_review(review: Review, settings: Settings, path: str = "/inject",
                  namespaces: Callable[[str], Mapping[str, str]] = lambda _: {}
                  ) -> dict[str, Any]:
    """The answer to a Pod's review: the patch that injects it, or none. ``namespaces``
    gives a namespace's annotations (what the webhook's cluster view holds of them)."""
    kind = review.kind.get("kind")
    if kind not in (None, "Pod"):
        raise ReviewError(f"request.kind.kind: /inject admits Pods, got {kind!r}")
    if review.operation != "CREATE" or review.object is None:
        return answer(review, True)
    pod = copy.deepcopy(dict(review.object))
    metadata = pod.setdefault("metadata", {})
    metadata.pop("managedFields", None)  # large, and nothing injection reads
    namespace = str(metadata.get("namespace") or review.namespace or "default")
    metadata.setdefault("namespace", namespace)
    required, _ = policy.injection_required(pod, namespace, settings)
    if not required:
        return answer(review, True)
    try:
        injected = inject(pod, Request(settings, policy.workload_of(pod, namespace),
                                       proxy_env=parse_inject_path(path),
                                       namespace_annotations=namespaces(namespace)))
    except InjectionError as exc:
        return answer(review, False, message=f"injection failed: {exc}", code=400)
    return answer(review, True, patch=create_patch(pod, injected))


# -- /validate ----------------------------------------------------------------------------

Check = Callable[[ConfigObject], list[ConfigError]]
Known = Callable[[ConfigObject], bool]


def without_location(error: ConfigError) -> str:
    """A problem as ``pilotfish validate`` prints it, without the file and line."""
    return str(attrs.evolve(error, file="", line=0)).lstrip(": ").removeprefix("warning: ")


def validate_review(review: Review, check: Check, known: Known) -> dict[str, Any]:
    """The answer to a config object's review: refused with ``pilotfish validate``'s
    messages when it has errors."""
    if review.operation not in ("CREATE", "UPDATE") or review.object is None:
        return answer(review, True)
    body = review.object
    metadata = body.get("metadata") or {}
    api_version, kind = body.get("apiVersion"), body.get("kind")
    if not isinstance(api_version, str) or not api_version:
        raise ReviewError("request.object.apiVersion: required")
    if not isinstance(kind, str) or not kind:
        raise ReviewError("request.object.kind: required")
    name = str(metadata.get("name") or metadata.get("generateName") or "")
    namespace = str(metadata.get("namespace") or review.namespace or "")
    obj = ConfigObject(api_version, kind, name, namespace, copy.deepcopy(dict(body)),
                       Source("admission", 0))
    if not known(obj):
        return answer(review, False, message=f"unrecognized type {kind}", code=400)
    problems = check(obj)
    errors = [without_location(p) for p in problems if p.severity == "error"]
    warnings = [without_location(p) for p in problems if p.severity != "error"]
    if errors:
        return answer(review, False, message="configuration is invalid: " + "; ".join(errors),
                      warnings=warnings, code=422)
    return answer(review, True, warnings=warnings)
