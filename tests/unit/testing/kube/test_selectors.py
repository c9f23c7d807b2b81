"""Label and field selectors as the API server parses them (no server here)."""

from __future__ import annotations

import pytest

from pilotfish.testing.kube.selectors import (
    fields_of,
    from_label_selector,
    matches,
    parse_fields,
    parse_labels,
)


@pytest.mark.parametrize(("selector", "labels", "expected"), [
    ("app=web", {"app": "web"}, True),
    ("app==web,tier!=db", {"app": "web", "tier": "db"}, False),
    ("tier!=db", {}, True),  # an absent label is not db
    ("env in (a, b),!legacy", {"env": "b"}, True),
    ("env in (a, b),!legacy", {"env": "b", "legacy": ""}, False),
    ("env notin (a,b)", {"env": "c"}, True),
    ("canary", {"canary": "x"}, True),
    ("", {"anything": "x"}, True),
])
def test_label_selectors(selector, labels, expected):
    assert matches(parse_labels(selector), labels) is expected


def test_a_malformed_label_selector_is_refused():
    with pytest.raises(ValueError, match="unable to parse requirement"):
        parse_labels("app=(web")


def test_field_selectors_know_each_kinds_fields():
    pod = {"metadata": {"name": "p", "namespace": "ns"},
           "spec": {"nodeName": "node-1", "hostNetwork": True}}
    selector = parse_fields("spec.nodeName=node-1,metadata.namespace!=other", "Pod")
    assert matches(selector, fields_of(pod, selector))
    selector = parse_fields("spec.hostNetwork=true", "Pod")
    assert matches(selector, fields_of(pod, selector))
    with pytest.raises(ValueError, match=r"field label not supported: spec\.nodeName"):
        parse_fields("spec.nodeName=x", "ConfigMap")


def test_label_selector_objects_as_webhooks_carry_them():
    selector = from_label_selector({
        "matchLabels": {"istio-injection": "enabled"},
        "matchExpressions": [{"key": "istio.io/rev", "operator": "DoesNotExist"}]})
    assert matches(selector, {"istio-injection": "enabled"})
    assert not matches(selector, {"istio-injection": "enabled", "istio.io/rev": "canary"})
    assert from_label_selector(None) == [] and from_label_selector({}) == []
    with pytest.raises(ValueError):
        from_label_selector({"matchExpressions": [{"key": "a", "operator": "Near"}]})
