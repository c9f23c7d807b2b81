"""The structural walker against small hand-written schemas, and the shipped catalog."""

from __future__ import annotations

from typing import Any

from pilotfish.validation import catalog
from pilotfish.validation.schema import check, check_object, typed_nodes


def problems(value: Any, schema: dict[str, Any], path: tuple[str | int, ...] = ("spec",)) -> (
    list[str]
):
    return [str(issue) for issue in check(value, schema, path)]


def test_required_and_unknown_fields():
    schema = {"type": "object", "required": ["hosts"], "properties": {
        "hosts": {"type": "array", "items": {"type": "string"}}}}
    assert problems({"hsots": ["a"]}, schema) == [
        "spec.hosts: Required value",
        'spec.hsots: unknown field "spec.hsots"',
    ]
    unknown = list(check({"hsots": 1, "hosts": []}, schema, ("spec",)))
    assert [issue.severity for issue in unknown] == ["error"]
    relaxed = list(check({"hsots": 1, "hosts": []}, schema, ("spec",), unknown="warning"))
    assert [(i.severity, i.message) for i in relaxed] == [
        ("warning", 'unknown field "spec.hsots" (ignored)')]


def test_type_errors_name_both_types_and_stop_descent():
    schema = {"type": "object", "properties": {"port": {"type": "integer", "minimum": 1}}}
    assert problems(None, schema) == [
        'spec: Invalid value: "null": spec in body must be of type object: "null"']
    assert problems({"port": "80"}, schema) == [
        'spec.port: Invalid value: "string": spec.port in body must be of type integer: '
        '"string"']
    # JSON has one number type: 80.0 is the integer 80.
    assert problems({"port": 80.0}, schema) == []
    assert problems({"port": True}, schema)[0].endswith('integer: "boolean"')


def test_nullable_accepts_null():
    assert problems(None, {"type": "integer", "nullable": True}) == []


def test_enum_reports_supported_values():
    schema = {"type": "string", "enum": ["ALLOW", "DENY"]}
    assert problems("deny", schema, ("spec", "action")) == [
        'spec.action: Unsupported value: "deny": supported values: "ALLOW", "DENY"']


def test_string_bounds_and_pattern():
    schema = {"type": "string", "minLength": 1, "maxLength": 5, "pattern": "^[a-z]+$"}
    assert problems("", schema, ("spec", "name")) == [
        'spec.name: Invalid value: "": spec.name in body should be at least 1 chars long',
        "spec.name: Invalid value: \"\": spec.name in body should match '^[a-z]+$'",
    ]
    assert problems("abcdefg", schema, ("n",)) == ["n: Too long: may not be more than 5 "
                                                   "characters"]
    assert problems("ab", schema) == []


def test_number_bounds():
    schema = {"type": "number", "minimum": 0, "maximum": 100}
    assert problems(150.0, schema, ("p",)) == [
        "p: Invalid value: 150: p in body should be less than or equal to 100"]
    assert problems(-0.5, schema, ("p",)) == [
        "p: Invalid value: -0.5: p in body should be greater than or equal to 0"]
    exclusive = {"type": "integer", "minimum": 0, "exclusiveMinimum": True}
    assert problems(0, exclusive, ("p",)) == ["p: Invalid value: 0: p in body should be "
                                              "greater than 0"]


def test_object_and_array_sizes():
    assert problems({}, {"type": "object", "minProperties": 1}, ("m",)) == [
        "m: Invalid value: 0: m in body should have at least 1 properties"]
    assert problems([1, 2, 3], {"type": "array", "maxItems": 2}, ("l",)) == [
        "l: Too many: 3: must have at most 2 items"]


def test_list_type_set_and_map_report_duplicates():
    as_set = {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}}
    assert problems(["a", "b", "a"], as_set, ("l",)) == ['l[2]: Duplicate value: "a"']
    as_map = {"type": "array", "x-kubernetes-list-type": "map",
              "x-kubernetes-list-map-keys": ["name"],
              "items": {"type": "object", "properties": {"name": {"type": "string"},
                                                         "value": {"type": "string"}}}}
    assert problems([{"name": "x", "value": "1"}, {"name": "x", "value": "2"}], as_map,
                    ("env",)) == ['env[1]: Duplicate value: {"name": "x"}']


def test_additional_properties_and_preserve_unknown_fields():
    schema = {"type": "object", "additionalProperties": {"type": "integer", "maximum": 10}}
    assert problems({"a": 1, "b": 11}, schema, ("ports",)) == [
        "ports.b: Invalid value: 11: ports.b in body should be less than or equal to 10"]
    preserve = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    assert problems({"anything": {"goes": [1]}}, preserve) == []


def test_int_or_string():
    schema = {"x-kubernetes-int-or-string": True,
              "anyOf": [{"type": "integer"}, {"type": "string"}]}
    assert problems(8080, schema) == []
    assert problems("http", schema) == []
    assert problems([1], schema, ("t",)) == [
        't: Invalid value: "array": t in body must be of type integer,string: "array"']


# Istio's way of saying "at most one of exact, prefix, regex".
AT_MOST_ONE = {
    "type": "object",
    "properties": {k: {"type": "string"} for k in ("exact", "prefix", "regex")},
    "oneOf": [
        {"not": {"anyOf": [{"required": ["exact"]}, {"required": ["prefix"]},
                           {"required": ["regex"]}]}},
        {"required": ["exact"]}, {"required": ["prefix"]}, {"required": ["regex"]},
    ],
}


def test_one_of_at_most_one_field():
    assert problems({}, AT_MOST_ONE) == []
    assert problems({"prefix": "/a"}, AT_MOST_ONE) == []
    assert problems({"exact": "/a", "prefix": "/b"}, AT_MOST_ONE, ("uri",)) == [
        'uri: Invalid value: "object": uri in body must validate one and only one schema '
        "(oneOf). Found 2 valid alternatives (set at most one of: exact, prefix, regex)"]


def test_any_of_all_of_and_not():
    fields = {k: {"type": "integer"} for k in "abc"}
    any_of = {"type": "object", "properties": fields,
              "anyOf": [{"required": ["a"]}, {"required": ["b"]}]}
    assert problems({"c": 1}, any_of, ("x",))[0] == (
        'x: Invalid value: "object": x in body must validate at least one schema (anyOf)')
    negated = {"type": "object", "properties": fields, "not": {"required": ["a"]}}
    assert problems({"a": 1}, negated, ("x",))[-1].endswith("must not validate the schema "
                                                            "(not)")
    all_of = {"type": "integer", "allOf": [{"minimum": 2}, {"maximum": 4}]}
    assert problems(5, all_of, ("x",)) == [
        "x: Invalid value: 5: x in body should be less than or equal to 4"]


def test_typed_nodes_skip_values_of_the_wrong_type():
    schema = {"type": "object", "properties": {
        "a": {"type": "integer"}, "b": {"type": "array", "items": {"type": "string"}}}}
    paths = [path for _, _, path in typed_nodes({"a": "x", "b": ["y", 2]}, schema)]
    assert paths == [(), ("b",), ("b", 0)]


def test_catalog_has_every_istio_kind_and_shares_alias_versions():
    kinds = {(info.group, info.kind): info for info in catalog.kinds()}
    virtual_service = kinds[("networking.istio.io", "VirtualService")]
    assert set(virtual_service.versions) == {"v1", "v1alpha3", "v1beta1"}
    assert ("telemetry.istio.io", "Telemetry") in kinds
    assert ("extensions.istio.io", "WasmPlugin") in kinds
    found = catalog.lookup("networking.istio.io", "VirtualService")
    assert found is not None
    assert found.schemas["v1"] is found.schemas["v1beta1"]
    assert catalog.schema_for("networking.istio.io", "VirtualService", "v2") is None


def test_whole_object_allows_metadata_and_reports_top_level_typos():
    schema = catalog.schema_for("networking.istio.io", "Gateway", "v1")
    assert schema is not None
    body = {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
            "metadata": {"name": "g", "anything": 1}, "spce": {}}
    assert [str(i) for i in check_object(body, schema)] == ['spce: unknown field "spce"']
