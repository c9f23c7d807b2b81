"""CEL rules: evaluation, failure wording, data errors, rules we cannot evaluate, and the
Kubernetes library functions Istio's rules use."""

from __future__ import annotations

from typing import Any

import pytest
from celpy import celtypes

from pilotfish.validation import cel
from pilotfish.validation.cel_library import parse_request_uri


def rule(text: str, message: str = "", **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"rule": text, **extra}
    if message:
        entry["message"] = message
    return entry


def failures(value: Any, schema: dict[str, Any]) -> list[str]:
    return [str(issue) for issue in cel.check_rules(value, schema)]


PORT = {"type": "integer", "x-kubernetes-validations": [
    rule("0 < self && self <= 65535", "port must be in 1..65535")]}
SERVER = {"type": "object", "properties": {
    "ports": {"type": "array", "items": {"type": "object", "properties": {"number": PORT}}},
}}


def test_failing_rule_is_reported_at_its_node_with_the_schema_type():
    body = {"ports": [{"number": 80}, {"number": 70000}]}
    assert failures(body, SERVER) == [
        'ports[1].number: Invalid value: "integer": port must be in 1..65535']


def test_rule_without_message_quotes_the_rule():
    schema = {"type": "string", "x-kubernetes-validations": [rule("self != '*'")]}
    assert failures("*", schema) == ["""Invalid value: "string": failed rule: self != '*'"""]


def test_message_expression_reason_and_field_path():
    schema = {"type": "object", "properties": {"name": {"type": "string"}},
              "x-kubernetes-validations": [
                  rule("self.name.startsWith('app-')", messageExpression="'bad: ' + self.name",
                       reason="FieldValueForbidden", fieldPath=".name")]}
    assert failures({"name": "web"}, schema) == ["name: Forbidden: bad: web"]


def test_has_ternaries_and_macros():
    schema = {"type": "object", "properties": {
        "mode": {"type": "string"}, "items": {"type": "array", "items": {
            "type": "object", "properties": {"n": {"type": "integer"}}}}},
        "x-kubernetes-validations": [
            rule("(has(self.mode) ? self.mode : 'A') == 'A' ? true : size(self.items) > 0",
                 "B needs items"),
            rule("self.items.all(a, self.items.exists_one(b, a.n == b.n))", "unique n"),
        ]}
    assert failures({"mode": "A", "items": []}, schema) == []
    assert failures({"mode": "B", "items": []}, schema) == [
        'Invalid value: "object": B needs items']
    assert failures({"items": [{"n": 1}, {"n": 1}]}, schema) == [
        'Invalid value: "object": unique n']


def test_unknown_fields_are_pruned_before_rules_run():
    schema = {"type": "object", "properties": {"a": {"type": "string"}},
              "x-kubernetes-validations": [rule("!has(self.typo)", "typo seen")]}
    assert failures({"a": "x", "typo": 1}, schema) == []


def test_conversion_failure_is_an_error_that_names_the_reason():
    schema = {"type": "object", "additionalProperties": {"type": "object"},
              "x-kubernetes-validations": [
                  rule("self.all(k, 0 < int(k) && int(k) <= 65535)", "bad port key")]}
    assert failures({"80": {}}, schema) == []
    assert failures({"http": {}}, schema) == [
        "Invalid value: \"object\": type conversion error from 'string' to 'int': 'http' "
        "evaluating rule: bad port key"]


def test_missing_field_is_a_no_such_key_error():
    schema = {"type": "object", "properties": {"v": {"type": "string"}},
              "x-kubernetes-validations": [rule("self.v != ''", "v must be set")]}
    assert failures({}, schema) == [
        'Invalid value: "object": no such key: v evaluating rule: v must be set']


def test_two_missing_keys_still_name_a_key():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
              "x-kubernetes-validations": [rule("self.a > 0 && self.b > 0", "positive")]}
    assert failures({}, schema) == [
        'Invalid value: "object": no such key: a evaluating rule: positive']


def test_false_and_error_is_false_not_an_error():
    schema = {"type": "string", "x-kubernetes-validations": [
        rule("self.startsWith('x') && int(self) > 0", "needs x")]}
    assert failures("abc", schema) == ['Invalid value: "string": needs x']


@pytest.mark.parametrize(("value", "ok"), [("5s", True), ("1h30m", True), ("0.5ms", False),
                                           ("1ms", True)])
def test_duration_comparison(value: str, ok: bool):
    schema = {"type": "string", "x-kubernetes-validations": [
        rule("duration(self) >= duration('1ms')", "at least 1ms")]}
    assert (failures(value, schema) == []) is ok


def test_bad_duration_is_reported_with_the_rule_message():
    schema = {"type": "string", "x-kubernetes-validations": [
        rule("duration(self) >= duration('1ms')", "at least 1ms")]}
    [problem] = failures("soon", schema)
    assert "'soon'" in problem and problem.endswith("evaluating rule: at least 1ms")


def test_substring_and_url_functions():
    socket = {"type": "string", "x-kubernetes-validations": [
        rule("self.startsWith('unix://') ? self.substring(7, 8) in ['/', '@'] : true", "abs")]}
    assert failures("unix:///run/a.sock", socket) == []
    assert failures("unix://rel", socket) == ['Invalid value: "string": abs']
    source = {"type": "string", "x-kubernetes-validations": [
        rule("isURL(self) ? url(self).getScheme() in ['', 'http', 'oci'] : true", "scheme")]}
    assert failures("ftp://host/x", source) == ['Invalid value: "string": scheme']
    assert failures("oci://registry:5000/img:1", source) == []
    assert failures("not a url", source) == []


def test_rule_pilotfish_cannot_evaluate_is_one_warning_per_object():
    schema = {"type": "array", "items": {"type": "string", "x-kubernetes-validations": [
        rule("self.lowerAscii() == self", "lowercase")]}}
    issues = list(cel.check_rules(["A", "B"], schema))
    assert len(issues) == 1
    assert issues[0].severity == "warning" and "not checked by pilotfish" in issues[0].message


def test_rules_are_compiled_once():
    first = cel.compile_rule("self > 1")
    assert cel.compile_rule("self > 1") is first
    assert isinstance(cel.compile_rule("self >"), cel.RuleUnavailable)


def test_to_cel_types_follow_the_schema():
    assert isinstance(cel.to_cel(80.0, {"type": "integer"}), celtypes.IntType)
    assert isinstance(cel.to_cel(5, {"type": "number"}), celtypes.DoubleType)


@pytest.mark.parametrize(("url", "scheme"), [
    ("https://example.com/keys.json", "https"),
    ("/absolute/path", ""),
    ("mailto:someone", "mailto"),
    ("http://[::1]:8080/x", "http"),
])
def test_parse_request_uri_accepts(url: str, scheme: str):
    assert parse_request_uri(url).scheme == scheme


@pytest.mark.parametrize("url", ["relative/path", "", "http://bad host/",
                                 "http://h:port/", "http://h/%zz", "a\x08b", "://x"])
def test_parse_request_uri_rejects(url: str):
    with pytest.raises(ValueError):
        parse_request_uri(url)


@pytest.mark.parametrize("number", ["9223372036854775808", "1" + "0" * 400])
def test_an_integer_past_int64_is_bound_as_a_double_not_a_crash(number: str):
    """Found by the fuzz suite (tests/fuzz): celpy's IntType raised ValueError("overflow")
    and the file was refused as unreadable instead of its port being named."""
    from pilotfish.core.yamlload import load_text
    from pilotfish.validation import validate

    text = ("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n"
            "  name: valid-service-entry\nspec:\n  hosts:\n  - eu.bookinfo.com\n  ports:\n"
            "  - number: 80\n    name: http\n    protocol: HTTP\n  resolution: DNS\n"
            "  endpoints:\n  - address: t.istio-system.svc.cluster.local\n    ports:\n"
            f"      http: {number}\n")
    (obj,), _ = load_text(text, "z-fuzz.yaml")
    errors = [(e.line, e.field, e.message) for e in validate(obj) if e.severity == "error"]
    assert (16, "spec.endpoints[0].ports.http",
            'Invalid value: "integer": port must be between 1-65535') in errors
    assert any("should be less than or equal to 4294967295" in m for _, _, m in errors)
