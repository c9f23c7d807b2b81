"""Structural validation: an object against its CRD's OpenAPI v3 schema.

This follows what the Kubernetes API server checks for a custom resource: types (with
``nullable`` and ``x-kubernetes-int-or-string``), enums, string/number/array/object
bounds, patterns, required fields, ``x-kubernetes-list-type`` set/map uniqueness and the
value-only ``allOf``/``anyOf``/``oneOf``/``not`` that structural schemas allow. Errors
are worded as the API server words them (see `issues`).

Fields the schema does not know are refused, as the API server refuses them under strict
field validation (kubectl's default): such a field is almost always a typo (``weigth``),
and silently pruning it changes what the object means. ``unknown=WARNING`` (the mesh
config's ``discovery.fieldValidation: Warn``) reports them and accepts the object, as
``kubectl --validate=warn`` does.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterator
from typing import Any

import attrs

from pilotfish.core.objects import FieldPath, format_path
from pilotfish.validation import names
from pilotfish.validation.catalog import Schema
from pilotfish.validation.issues import (
    ERROR,
    Issue,
    duplicate,
    in_body,
    json_type,
    required,
    too_long,
    too_many,
    unsupported,
)

# Kubernetes' resource.Quantity has no structural form; its generated schema says so with this.
NUMBER_OR_STRING = "x-pilotfish-number-or-string"

# Every object carries these whether or not its CRD schema lists them.
_ROOT_FIELDS: Schema = {
    "apiVersion": {"type": "string"},
    "kind": {"type": "string"},
    "metadata": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
}


def check_object(body: dict[str, Any], schema: Schema,
                 unknown: str = ERROR) -> Iterator[Issue]:
    """Every structural problem of a whole object (apiVersion, kind, metadata, spec...);
    ``unknown`` is the severity of an unknown field."""
    # A CRD's bare ``metadata: {type: object}`` (the Gateway API's) would refuse every
    # name: the API server's own ObjectMeta applies there; a full schema of it is kept.
    properties = {**_ROOT_FIELDS, **schema.get("properties", {})}
    if not properties["metadata"].get("properties"):
        properties["metadata"] = _ROOT_FIELDS["metadata"]
    root = {**schema, "properties": properties}
    yield from check(body, root, (), unknown)


def check(value: Any, schema: Schema, path: FieldPath,
          unknown: str | None = ERROR) -> Iterator[Issue]:
    """Problems of ``value`` against ``schema``; unknown fields at severity ``unknown``
    (``None``: not reported)."""
    if value is None:
        if not schema.get("nullable") and _declared_type(schema):
            yield _type_error(path, value, _declared_type(schema))
        return
    if not has_type(value, schema):
        yield _type_error(path, value, _declared_type(schema))
        return
    enum = schema.get("enum")
    if enum is not None and not any(_same(value, choice) for choice in enum):
        yield unsupported(path, value, enum)
    if isinstance(value, str):
        yield from _check_string(value, schema, path)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield from _check_number(value, schema, path)
    elif isinstance(value, list):
        yield from _check_array(value, schema, path, unknown)
    elif isinstance(value, dict):
        yield from _check_object(value, schema, path, unknown)
    yield from _check_combinators(value, schema, path)


def has_type(value: Any, schema: Schema) -> bool:
    """Whether a non-null value has the type its schema declares (untyped: anything)."""
    declared = schema.get("type")
    if schema.get("x-kubernetes-int-or-string"):
        return isinstance(value, str) or _is_integer(value)
    if schema.get(NUMBER_OR_STRING):  # a resource.Quantity: "100m" or 2.5
        return isinstance(value, str | int | float) and not isinstance(value, bool)
    if declared == "object":
        return isinstance(value, dict)
    if declared == "array":
        return isinstance(value, list)
    if declared == "string":
        return isinstance(value, str)
    if declared == "integer":
        return _is_integer(value)
    if declared == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if declared == "boolean":
        return isinstance(value, bool)
    return True


def _is_integer(value: Any) -> bool:
    # JSON has one number type; the API server reads 80.0 as the integer 80.
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def _same(value: Any, choice: Any) -> bool:
    return type(value) is type(choice) and value == choice


def _declared_type(schema: Schema) -> str:
    if schema.get("x-kubernetes-int-or-string"):
        return "integer,string"
    if schema.get(NUMBER_OR_STRING):
        return "number,string"
    return str(schema.get("type", ""))


def _type_error(path: FieldPath, value: Any, expected: str) -> Issue:
    actual = json_type(value)
    issue = in_body(path, actual, f'must be of type {expected}: "{actual}"')
    return attrs.evolve(issue, blocking=True)


def _check_string(value: str, schema: Schema, path: FieldPath) -> Iterator[Issue]:
    length = len(value)  # characters, not bytes, as the API server counts them
    if "maxLength" in schema and length > schema["maxLength"]:
        yield too_long(path, schema["maxLength"])
    if "minLength" in schema and length < schema["minLength"]:
        yield in_body(path, value, f"should be at least {schema['minLength']} chars long")
    pattern = schema.get("pattern")
    # A pattern RE2 cannot compile is the CRD's problem, not the object's: skip it.
    if isinstance(pattern, str) and not names.regex_error(pattern) and not names.regex_search(
            pattern, value):
        yield in_body(path, value, f"should match '{pattern}'")
    fmt = schema.get("format")
    if fmt == "byte" and not _is_base64(value):
        yield in_body(path, value, f'must be of type byte: "{value}"')


def _is_base64(value: str) -> bool:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _check_number(value: float, schema: Schema, path: FieldPath) -> Iterator[Issue]:
    if "maximum" in schema:
        limit = schema["maximum"]
        if schema.get("exclusiveMaximum") and value >= limit:
            yield in_body(path, value, f"should be less than {_num(limit)}")
        elif value > limit:
            yield in_body(path, value, f"should be less than or equal to {_num(limit)}")
    if "minimum" in schema:
        limit = schema["minimum"]
        if schema.get("exclusiveMinimum") and value <= limit:
            yield in_body(path, value, f"should be greater than {_num(limit)}")
        elif value < limit:
            yield in_body(path, value, f"should be greater than or equal to {_num(limit)}")
    step = schema.get("multipleOf")
    if step and (value / step) % 1:
        yield in_body(path, value, f"should be a multiple of {_num(step)}")


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _check_array(items: list[Any], schema: Schema, path: FieldPath,
                 unknown: str | None) -> Iterator[
    Issue
]:
    if "maxItems" in schema and len(items) > schema["maxItems"]:
        yield too_many(path, len(items), schema["maxItems"])
    if "minItems" in schema and len(items) < schema["minItems"]:
        yield in_body(path, len(items), f"should have at least {schema['minItems']} items")
    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "set" or schema.get("uniqueItems"):
        yield from _duplicates(path, items, lambda item: item)
    elif list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys", [])

        def identity(item: Any) -> Any:
            return {k: item.get(k) for k in keys} if isinstance(item, dict) else item

        yield from _duplicates(path, items, identity)
    item_schema = schema.get("items")
    if isinstance(item_schema, dict):
        for index, item in enumerate(items):
            yield from check(item, item_schema, (*path, index), unknown)


def _duplicates(
    path: FieldPath, items: list[Any], identity: Callable[[Any], Any]
) -> Iterator[Issue]:
    seen: list[Any] = []
    for index, item in enumerate(items):
        key = identity(item)
        if key in seen:
            yield duplicate((*path, index), key)
        else:
            seen.append(key)


def _check_object(value: dict[str, Any], schema: Schema, path: FieldPath,
                  unknown: str | None) -> (
    Iterator[Issue]
):
    for name in schema.get("required", ()):
        if name not in value:
            yield required((*path, name))
    if "minProperties" in schema and len(value) < schema["minProperties"]:
        yield in_body(path, len(value), f"should have at least {schema['minProperties']} "
                      "properties")
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        yield too_many(path, len(value), schema["maxProperties"])
    properties: Schema = schema.get("properties", {})
    extra = schema.get("additionalProperties")
    keep_unknown = schema.get("x-kubernetes-preserve-unknown-fields") or extra is True
    for key, child in value.items():
        if key in properties:
            yield from check(child, properties[key], (*path, key), unknown)
        elif isinstance(extra, dict):
            yield from check(child, extra, (*path, key), unknown)
        elif unknown is not None and not keep_unknown:
            field = (*path, key)
            yield Issue(field, f'unknown field "{format_path(field)}"' + (
                "" if unknown == ERROR else " (ignored)"), unknown)


def _check_combinators(value: Any, schema: Schema, path: FieldPath) -> Iterator[Issue]:
    # Structural schemas only validate values in these branches: no types, no unknown fields.
    for branch in schema.get("allOf", ()):
        yield from check(value, branch, path, unknown=None)
    shown = json_type(value)
    # int-or-string's anyOf only restates the type, which has() already checked.
    any_of = [] if schema.get("x-kubernetes-int-or-string") else schema.get("anyOf", [])
    if any_of and not any(_passes(value, branch, path) for branch in any_of):
        yield in_body(path, shown, "must validate at least one schema (anyOf)")
    if "oneOf" in schema:
        passing = sum(_passes(value, branch, path) for branch in schema["oneOf"])
        if passing != 1:
            found = f". Found {passing} valid alternatives" if passing > 1 else ""
            hint = _alternatives(schema["oneOf"])
            yield in_body(path, shown, "must validate one and only one schema (oneOf)"
                          f"{found}{hint}")
    if "not" in schema and _passes(value, schema["not"], path):
        yield in_body(path, shown, "must not validate the schema (not)")


def _passes(value: Any, branch: Schema, path: FieldPath) -> bool:
    return not any(issue.severity == "error" for issue in check(value, branch, path, None))


def _alternatives(branches: list[Schema]) -> str:
    """Name the fields when a oneOf only says "at most one of these fields" (Istio's use)."""
    fields = [name for branch in branches for name in branch.get("required", ())]
    if fields and all(set(branch) <= {"required", "not"} for branch in branches):
        return f" (set at most one of: {', '.join(fields)})"
    return ""


def typed_nodes(value: Any, schema: Schema, path: FieldPath = ()) -> Iterator[
    tuple[Any, Schema, FieldPath]
]:
    """Every non-null node whose value has its schema's type, parents before children.

    CEL rules are evaluated on these; a node with a type error is reported by `check`
    and its rules are skipped, as the API server skips rules it cannot type.
    """
    if value is None or not has_type(value, schema):
        return
    yield value, schema, path
    if isinstance(value, dict):
        properties: Schema = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, child in value.items():
            child_schema = properties.get(key, extra)
            if isinstance(child_schema, dict):
                yield from typed_nodes(child, child_schema, (*path, key))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            yield from typed_nodes(item, schema["items"], (*path, index))


def with_defaults(value: Any, schema: Schema) -> Any:
    """``value`` with the schema's defaults filled in where a property is absent, as the API
    server defaults an object before it validates it (a new copy; ``value`` is kept)."""
    if isinstance(value, dict) and has_type(value, schema):
        properties: Schema = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        out = {}
        for key, child in value.items():
            child_schema = properties.get(key, extra)
            out[key] = with_defaults(child, child_schema) if isinstance(
                child_schema, dict) else child
        for key, child_schema in properties.items():
            if key not in out and "default" in child_schema:
                out[key] = with_defaults(child_schema["default"], child_schema)
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [with_defaults(item, schema["items"]) for item in value]
    return value
