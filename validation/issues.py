"""One problem found in an object, worded the way the Kubernetes API server words it.

Users read these next to ``kubectl apply`` output, so the shapes match the API server's
field errors: ``spec.hosts: Required value``, ``spec.mode: Unsupported value: "BLAH":
supported values: "A", "B"``, ``spec.port: Invalid value: 0: <detail>``. The walkers
yield `Issue` objects with a field path; `pilotfish.validation.validate` turns them
into `ConfigError` with the file and line the path points at.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import attrs

from pilotfish.core.objects import FieldPath, format_path

ERROR = "error"
WARNING = "warning"


@attrs.frozen
class Issue:
    path: FieldPath
    message: str  # what follows "<field>: " in the API server's text
    severity: str = ERROR
    # The API server skips CEL rules when an object has errors of these shapes (wrong
    # type, missing, unsupported, too long, too many): the rules could not be typed.
    blocking: bool = attrs.field(default=False, eq=False)

    @property
    def field(self) -> str:
        return format_path(self.path)

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.path else self.message


def show_value(value: Any) -> str:
    """A bad value as the API server prints it: strings quoted, numbers bare, null."""
    if value is None:
        return '"null"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # YAML 150.0 arrives as JSON 150 at the API server
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    # The API server prints Go structs here; JSON is what the user wrote, so it reads better.
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def required(path: FieldPath, detail: str = "") -> Issue:
    return Issue(path, f"Required value: {detail}" if detail else "Required value",
                 blocking=True)


def invalid(path: FieldPath, value: Any, detail: str) -> Issue:
    return Issue(path, f"Invalid value: {show_value(value)}: {detail}")


def forbidden(path: FieldPath, detail: str) -> Issue:
    return Issue(path, f"Forbidden: {detail}")


def duplicate(path: FieldPath, value: Any) -> Issue:
    return Issue(path, f"Duplicate value: {show_value(value)}")


def unsupported(path: FieldPath, value: Any, supported: Iterable[Any]) -> Issue:
    choices = ", ".join(show_value(choice) for choice in supported)
    return Issue(path, f"Unsupported value: {show_value(value)}: supported values: {choices}",
                 blocking=True)


def too_long(path: FieldPath, limit: int) -> Issue:
    return Issue(path, f"Too long: may not be more than {limit} characters", blocking=True)


def too_many(path: FieldPath, actual: int, limit: int) -> Issue:
    return Issue(path, f"Too many: {actual}: must have at most {limit} items", blocking=True)


def in_body(path: FieldPath, value: Any, detail: str) -> Issue:
    """The OpenAPI validator's form, which repeats the field inside the detail."""
    return invalid(path, value, f"{format_path(path)} in body {detail}")


def warning(path: FieldPath, message: str) -> Issue:
    return Issue(path, message, WARNING)


def json_type(value: Any) -> str:
    """The JSON type name of a value, as schema type errors name it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
