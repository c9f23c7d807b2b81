"""CEL validation rules (``x-kubernetes-validations``), evaluated as the API server does.

Every rule of every schema node is evaluated with ``self`` bound to that node's value
(there is no ``oldSelf``: pilotfish validates objects, not updates). A rule that returns
false is reported at the node's path with the rule's message, e.g.
``spec.ports[0].number: Invalid value: "integer": port must be between 1-65535``. A rule
that fails on the data (``int("abc")``) is an error too, worded
``<reason> evaluating rule: <message>``.

A rule pilotfish cannot evaluate (a function cel-python lacks, a parse error) must not
reject config the API server would accept: it is reported once per object as a warning.
Rules are compiled once per process and cached by their text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from functools import cache
from typing import Any

import celpy
from celpy import celtypes
from celpy.evaluation import CELEvalError, Evaluator

from pilotfish.core.objects import FieldPath
from pilotfish.validation import cel_library
from pilotfish.validation.catalog import Schema
from pilotfish.validation.issues import (
    Issue,
    duplicate,
    forbidden,
    invalid,
    required,
    warning,
)
from pilotfish.validation.schema import typed_nodes


class RuleUnavailable(Exception):
    """pilotfish cannot evaluate this rule; the reason says why."""


class RuleDataError(Exception):
    """The rule failed on this object's data (a key it needs is absent, a string is not a
    number...): the API server rejects the object, with this reason."""


@cache
class _Evaluator(Evaluator):
    """celpy's evaluator, with ``exists_one`` as the CEL spec has it: an element whose
    predicate fails makes the macro's value that error, which ``||`` and ``&&`` may then
    absorb (``!has(x.name) || self.exists_one(y, ... x.name ...)``, in the Gateway API's
    CRDs). celpy raised it instead, failing rules that hold."""

    def member_dot_arg(self, tree: Any) -> Any:
        member, method = tree.children[:2]
        if getattr(method, "value", None) != "exists_one":
            return super().member_dot_arg(tree)
        items = self.visit(member)
        if isinstance(items, CELEvalError):
            return items
        predicate = self.build_ss_macro_eval(tree)  # errors come back as values
        count = 0
        for item in items:
            result = predicate(item)
            if isinstance(result, CELEvalError):
                return result
            count += bool(result)
        return celtypes.BoolType(count == 1)


    def sub_evaluator(self, ast: Any) -> Evaluator:
        return _Evaluator(ast, activation=self.activation)  # macros within macros too


class _Runner(celpy.InterpretedRunner):
    def evaluate(self, context: Any) -> Any:
        return _Evaluator(ast=self.ast, activation=self.new_activation()).evaluate(context)


def _environment() -> celpy.Environment:
    return celpy.Environment(runner_class=_Runner)


@cache
def compile_rule(text: str) -> celpy.Runner | RuleUnavailable:
    """The runnable program for a rule, or why there is none. Cached for the process."""
    env = _environment()
    try:
        return env.program(env.compile(text), functions=cel_library.FUNCTIONS)
    except Exception as exc:  # any parse or setup failure means "cannot evaluate here"
        return RuleUnavailable(f"cannot compile: {str(exc).splitlines()[0]}")


def evaluate(text: str, self_value: Any) -> Any:
    """Evaluate a rule. Returns the CEL result; raises RuleDataError when it fails on the
    data, RuleUnavailable when pilotfish cannot evaluate it."""
    program = compile_rule(text)
    if isinstance(program, RuleUnavailable):
        raise program
    result: Any
    with cel_library.recording() as reasons:
        try:
            result = program.evaluate({"self": self_value})
        except CELEvalError as exc:
            result = exc
        except Exception as exc:  # cel-python bug or gap: not the user's fault
            raise RuleUnavailable(f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(result, CELEvalError):
        return result
    if reasons:
        raise RuleDataError(reasons[0])
    raise _classify(result)


def _classify(error: CELEvalError) -> Exception:
    reason = str(error.args[0]) if error.args else "evaluation error"
    # When both sides of && or || fail, cel-python keeps the inner errors only as text.
    text = " ".join(map(str, error.args))
    member = re.search(r"no such member in mapping: \\?'([^'\\]*)", text)
    if member:
        return RuleDataError(f"no such key: {member.group(1)}")
    # cel-python reports functions it lacks as undeclared, and type gaps as overloads.
    if reason.startswith(("undeclared reference", "no such overload", "found no matching")):
        return RuleUnavailable(reason.split(" (in activation")[0])
    return RuleDataError(reason)


def check_rules(body: Any, schema: Schema) -> Iterator[Issue]:
    """Every rule failure in an object, parents before children."""
    unavailable: set[str] = set()
    for value, node_schema, path in typed_nodes(body, schema):
        rules = node_schema.get("x-kubernetes-validations")
        if not rules:
            continue
        self_value = to_cel(value, node_schema)
        for rule in rules:
            text = rule.get("rule", "")
            try:
                result = evaluate(text, self_value)
            except RuleUnavailable as exc:
                if text not in unavailable:
                    unavailable.add(text)
                    yield warning(path, f"internal: rule {text!r} was not checked by "
                                  f"pilotfish ({exc})")
                continue
            except RuleDataError as exc:
                detail = f"{exc} evaluating rule: {_rule_message(rule)}"
                yield invalid(path, _schema_type(node_schema), detail)
                continue
            if not isinstance(result, celtypes.BoolType):
                yield warning(path, f"internal: rule {text!r} returned {type(result).__name__}"
                              ", not a bool")
            elif not result:
                yield _failure(rule, self_value, node_schema, path)


def _rule_message(rule: dict[str, Any]) -> str:
    message = str(rule.get("message", "")).strip()
    return message or str(rule.get("rule", "")).strip()


def _failure(rule: dict[str, Any], self_value: Any, schema: Schema, path: FieldPath) -> Issue:
    message = str(rule.get("message", "")).strip() or f"failed rule: {rule['rule'].strip()}"
    expression = rule.get("messageExpression")
    if expression:
        try:
            computed = evaluate(expression, self_value)
        except (RuleDataError, RuleUnavailable):
            computed = None
        if isinstance(computed, str) and computed.strip():  # StringType, or str from "+"
            message = str(computed).strip()
    where = (*path, *_field_path(rule.get("fieldPath", "")))
    value = _schema_type(schema)
    reason = rule.get("reason", "FieldValueInvalid")
    if reason == "FieldValueRequired":
        return required(where, message)
    if reason == "FieldValueForbidden":
        return forbidden(where, message)
    if reason == "FieldValueDuplicate":
        return duplicate(where, value)
    return invalid(where, value, message)


_FIELD_STEP = re.compile(r"\.([A-Za-z_$][A-Za-z0-9_$]*)|\['([^']*)'\]|\[(\d+)\]")


def _field_path(text: str) -> FieldPath:
    """A rule's ``fieldPath`` (``.spec.ports['http']``, ``.items[0]``) as path parts."""
    parts: list[str | int] = []
    for step in _FIELD_STEP.finditer(text):
        name, key, index = step.groups()
        parts.append(int(index) if index is not None else name if name is not None else key)
    return tuple(parts)


def _schema_type(schema: Schema) -> str:
    return str(schema.get("type", ""))


_INT64 = (-(2 ** 63), 2 ** 63 - 1)


def _double(value: float) -> float:
    try:
        return float(value)
    except OverflowError:  # an integer past any double
        return math.inf if value > 0 else -math.inf


def to_cel(value: Any, schema: Schema) -> Any:
    """A JSON value as the CEL value the API server would bind, typed by its schema.

    Unknown fields are dropped (the API server prunes them before rules run), integer
    fields are CEL ints even when written as 80.0, number fields are doubles.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, str):
        return celtypes.StringType(value)
    if isinstance(value, int | float):
        if schema.get("type") == "number" or (isinstance(value, float) and not
                                             value.is_integer()) or not _INT64[0] <= value <= (
                _INT64[1]):
            # Past int64 the API server holds a JSON number as a double, and so does CEL.
            return celtypes.DoubleType(_double(value))
        return celtypes.IntType(int(value))
    if isinstance(value, list):
        item_schema = schema.get("items") or {}
        return celtypes.ListType([to_cel(item, item_schema) for item in value])
    if isinstance(value, dict):
        properties: Schema = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        keep = schema.get("x-kubernetes-preserve-unknown-fields") or extra is True or (
            "type" not in schema)
        out: dict[Any, Any] = {}
        for key, child in value.items():
            if key in properties:
                child_schema = properties[key]
                name = escape_property(key)
            elif isinstance(extra, dict):
                child_schema, name = extra, key
            elif keep:
                child_schema, name = {}, key
            else:
                continue
            out[celtypes.StringType(name)] = to_cel(child, child_schema)
        # The API server applies the schema's defaults before any rule runs.
        for key, child_schema in properties.items():
            if key not in value and "default" in child_schema:
                out[celtypes.StringType(escape_property(key))] = to_cel(
                    child_schema["default"], child_schema)
        return celtypes.MapType(out)
    return value


# Property names CEL cannot spell as they are (its reserved words), which rules write as
# ``__name__`` (Kubernetes' escaping, as in ``p.__namespace__``).
_RESERVED = frozenset({
    "true", "false", "null", "in", "as", "break", "const", "continue", "else", "for",
    "function", "if", "import", "let", "loop", "package", "namespace", "return", "var",
    "void", "while"})
_ESCAPES = (("__", "__underscores__"), (".", "__dot__"), ("-", "__dash__"), ("/", "__slash__"))


def escape_property(name: str) -> str:
    """A declared property's name as CEL rules refer to it."""
    if name in _RESERVED:
        return f"__{name}__"
    for char, escaped in _ESCAPES:
        name = name.replace(char, escaped)
    return name
