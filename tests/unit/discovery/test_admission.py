"""Admission reviews on plain data: malformed ones name the field; the validation answer
carries pilotfish validate's messages."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from pilotfish.discovery import admission
from pilotfish.discovery.inject.settings import Settings
from pilotfish.validation import check, known_kind


def review(**request: Any) -> bytes:
    body = {"uid": "u-1", "operation": "CREATE", "kind": {"kind": "Pod"}, "object": {}}
    body.update(request)
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                       "request": body}).encode()


@pytest.mark.parametrize(("body", "message"), [
    (b"", "request body: empty"),
    (b"[1]", "request body: expected an AdmissionReview object"),
    (json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "Review"}).encode(),
     "kind: expected AdmissionReview"),
    (json.dumps({"apiVersion": "v9", "kind": "AdmissionReview"}).encode(), "apiVersion:"),
    (json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).encode(),
     "request: required"),
    (review(uid=""), "request.uid: required"),
    (review(operation=None), "request.operation: required"),
    (review(object=None), "request.object: required for CREATE"),
    (review(object={"metadata": "x"}), "request.object.metadata: expected an object"),
    (review(namespace=3), "request.namespace: expected a string"),
])
def test_a_malformed_review_names_the_field(body: bytes, message: str):
    with pytest.raises(admission.ReviewError) as caught:
        admission.parse(body)
    assert str(caught.value).startswith(message)


def test_only_pods_are_injected_and_deletes_pass():
    with pytest.raises(admission.ReviewError, match=r"request\.kind\.kind: /inject admits Pods"):
        admission.inject_review(admission.parse(review(kind={"kind": "Service"})),
                                Settings.create())
    answer = admission.inject_review(admission.parse(review(operation="DELETE", object=None)),
                                     Settings.create())
    assert answer["response"] == {"uid": "u-1", "allowed": True}


def test_a_bad_annotation_refuses_the_pod_naming_it():
    pod = {"metadata": {"name": "p", "annotations": {
        "traffic.sidecar.istio.io/excludeInboundPorts": "*"}},
        "spec": {"containers": [{"name": "app", "image": "a"}]}}
    answer = admission.inject_review(admission.parse(review(object=pod, namespace="shop")),
                                     Settings.create())["response"]
    assert not answer["allowed"]
    assert answer["status"]["message"].startswith(
        "injection failed: annotation traffic.sidecar.istio.io/excludeInboundPorts: '*'")


def test_a_pod_is_answered_with_a_json_patch():
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "app", "image": "a"}]}}
    answer = admission.inject_review(admission.parse(review(object=pod, namespace="shop")),
                                     Settings.create())["response"]
    assert answer["allowed"] and answer["patchType"] == "JSONPatch"
    patch = json.loads(base64.b64decode(answer["patch"]))
    assert {"op": "add", "path": "/spec/initContainers"} in [
        {k: v for k, v in op.items() if k != "value"} for op in patch]


def validation(obj: dict[str, Any]) -> dict[str, Any]:
    return admission.validate_review(admission.parse(review(object=obj, namespace="shop")),
                                     check, known_kind)["response"]


def test_validation_refuses_errors_with_validates_messages_and_unknown_kinds():
    bad = {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
           "metadata": {"name": "r"}, "spec": {}}
    answer = validation(bad)
    assert not answer["allowed"] and answer["status"]["code"] == 422
    assert answer["status"]["message"].startswith(
        "configuration is invalid: DestinationRule shop/r: spec.host: Required value")
    unknown = validation({"apiVersion": "example.com/v1", "kind": "Thing",
                          "metadata": {"name": "t"}})
    assert (unknown["allowed"], unknown["status"]["message"]) == (False,
                                                                  "unrecognized type Thing")
    good = validation({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                       "metadata": {"name": "r"}, "spec": {"host": "reviews"}})
    assert good["allowed"]
