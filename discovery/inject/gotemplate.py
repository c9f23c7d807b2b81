"""The part of Go's ``text/template`` that custom injection templates use, sans-IO.

Istio's injector renders templates (``sidecarInjectorWebhook.templates``) with Go's
template engine over the pod: ``.ObjectMeta``, ``.Spec``, ``.Values``, ``.Revision``. This
renders the same language for the constructs custom templates write:

- ``{{ PIPELINE }}`` prints a value as Go's ``fmt`` does (``<no value>`` for a missing
  one, booleans in lower case); ``{{-`` and ``-}}`` trim the whitespace beside them;
- ``{{ range $i, $x := PIPELINE }}`` / ``{{ range $x := PIPELINE }}`` / ``{{ range
  PIPELINE }}`` (dot is the element), ``{{ if PIPELINE }}``, ``{{ else }}``, ``{{ with
  PIPELINE }}``, each closed by ``{{ end }}``; ``{{/* comments */}}``;
- operands: ``.Field.Path`` and ``$var.Field`` (Go's field names, read as the JSON keys
  Kubernetes objects carry: ``Spec`` → ``spec``, ``ObjectMeta`` → ``metadata``; map keys as
  written), strings, numbers, ``true``/``false``; functions ``eq``, ``ne``, ``not``,
  ``and``, ``or``, ``len``, ``index``, ``default``, ``quote``, ``toJson``; ``|`` pipes.

Anything else (``define``, ``template``, ``block``, other functions) is a
`TemplateError` naming it: refused, not misread.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs


class TemplateError(ValueError):
    """Template text outside the supported subset, or that does not parse."""


_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)
_FIELDS = {"ObjectMeta": "metadata", "TypeMeta": "", "Spec": "spec", "Status": "status"}
MISSING = object()


@attrs.frozen
class _Node:
    kind: str  # text | print | range | if | with
    text: str = ""
    pipeline: str = ""
    variables: tuple[str, ...] = ()
    body: tuple[Any, ...] = ()
    otherwise: tuple[Any, ...] = ()


def render(text: str, data: Mapping[str, Any]) -> str:
    """``text`` rendered over ``data`` (the keys are the top-level fields, ``ObjectMeta``,
    ``Spec``, ``Values``...)."""
    nodes, rest = _parse(_tokens(text), ())
    if rest:
        raise TemplateError(f"unexpected {{{{ {rest[0][1]} }}}}")
    out: list[str] = []
    _run(nodes, data, {"$": data}, out)
    return "".join(out)


def _tokens(text: str) -> list[tuple[str, str]]:
    """("text", literal) and ("action", inside) in order, trim markers applied."""
    tokens: list[tuple[str, str]] = []
    position = 0
    for match in _ACTION.finditer(text):
        literal = text[position:match.start()]
        if match.group(1):
            literal = literal.rstrip()
        tokens.append(("text", literal))
        tokens.append(("action", match.group(2).strip()))
        position = match.end()
        if match.group(3):
            while position < len(text) and text[position] in " \t\r\n":
                position += 1
    tokens.append(("text", text[position:]))
    return [t for t in tokens if t != ("text", "")]


def _parse(tokens: list[tuple[str, str]], stop: tuple[str, ...]
           ) -> tuple[tuple[_Node, ...], list[tuple[str, str]]]:
    """Nodes until an action in ``stop`` (returned with what follows it)."""
    nodes: list[_Node] = []
    while tokens:
        kind, value = tokens[0]
        if kind == "text":
            nodes.append(_Node("text", value))
            tokens = tokens[1:]
            continue
        word = value.split(None, 1)[0] if value else ""
        if word in stop:
            return tuple(nodes), tokens
        tokens = tokens[1:]
        if value.startswith("/*"):
            continue
        if word in ("range", "if", "with"):
            head = value[len(word):].strip()
            variables: tuple[str, ...] = ()
            if word == "range" and ":=" in head:
                names, head = head.split(":=", 1)
                variables = tuple(v.strip() for v in names.split(","))
                if not all(v.startswith("$") for v in variables) or len(variables) > 2:
                    raise TemplateError(f"range: bad variables {names.strip()!r}")
            body, tokens = _parse(tokens, ("else", "end"))
            otherwise: tuple[_Node, ...] = ()
            if tokens and tokens[0][1] == "else":
                otherwise, tokens = _parse(tokens[1:], ("end",))
            if not tokens:
                raise TemplateError(f"{{{{ {value} }}}} is not closed by {{{{ end }}}}")
            tokens = tokens[1:]
            nodes.append(_Node(word, pipeline=head.strip(), variables=variables, body=body,
                               otherwise=otherwise))
        elif word in ("define", "template", "block", "else", "end", "break", "continue"):
            raise TemplateError(f"{{{{ {value} }}}}: {word!r} is not supported here")
        else:
            nodes.append(_Node("print", pipeline=value))
    if stop:
        raise TemplateError(f"missing {{{{ {stop[-1]} }}}}")
    return tuple(nodes), tokens


def _run(nodes: Sequence[_Node], dot: Any, variables: dict[str, Any], out: list[str]) -> None:
    for node in nodes:
        if node.kind == "text":
            out.append(node.text)
        elif node.kind == "print":
            out.append(_show(_pipeline(node.pipeline, dot, variables)))
        elif node.kind == "range":
            items = _pipeline(node.pipeline, dot, variables)
            pairs = list(items.items()) if isinstance(items, Mapping) else \
                list(enumerate(items)) if isinstance(items, list | tuple) else []
            if not pairs:
                _run(node.otherwise, dot, variables, out)
            for key, item in pairs:
                scope = dict(variables)
                if len(node.variables) == 2:
                    scope[node.variables[0]], scope[node.variables[1]] = key, item
                elif node.variables:
                    scope[node.variables[0]] = item
                _run(node.body, item, scope, out)
        else:  # if, with
            value = _pipeline(node.pipeline, dot, variables)
            if _truth(value):
                _run(node.body, value if node.kind == "with" else dot, variables, out)
            else:
                _run(node.otherwise, dot, variables, out)


def _truth(value: Any) -> bool:
    return value is not MISSING and bool(value)


def _show(value: Any) -> str:
    if value is MISSING or value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "map[" + " ".join(f"{k}:{_show(v)}" for k, v in sorted(value.items())) + "]"
    if isinstance(value, list | tuple):
        return "[" + " ".join(_show(v) for v in value) + "]"
    return str(value)


def _pipeline(text: str, dot: Any, variables: Mapping[str, Any]) -> Any:
    value: Any = MISSING
    for index, stage in enumerate(text.split("|")):
        words = _words(stage.strip())
        if not words:
            raise TemplateError(f"empty command in {text!r}")
        extra = () if index == 0 else (value,)
        value = _command(words, dot, variables, extra)
    return value


def _words(text: str) -> list[str]:
    lexer = shlex.shlex(text, posix=False)
    lexer.whitespace_split = True
    lexer.quotes = '"`'
    return list(lexer)


def _command(words: list[str], dot: Any, variables: Mapping[str, Any],
             extra: tuple[Any, ...]) -> Any:
    head = words[0]
    if head in FUNCTIONS:
        args = [_operand(w, dot, variables) for w in words[1:]] + list(extra)
        return FUNCTIONS[head](*args)
    if len(words) > 1 or extra:
        raise TemplateError(f"{head!r} is not a function this template engine has")
    return _operand(head, dot, variables)


def _operand(word: str, dot: Any, variables: Mapping[str, Any]) -> Any:
    if word[:1] in "\"`":
        return json.loads(word) if word[0] == '"' else word[1:-1]
    if word in ("true", "false"):
        return word == "true"
    if re.fullmatch(r"-?\d+(\.\d+)?", word):
        return float(word) if "." in word else int(word)
    if word.startswith("$"):
        name, _, path = word.partition(".")
        if name not in variables:
            raise TemplateError(f"undefined variable {name}")
        return _field(variables[name], path)
    if word.startswith("."):
        return _field(dot, word[1:])
    raise TemplateError(f"{word!r} is not a function or value this template engine has")


def _field(value: Any, path: str) -> Any:
    for name in filter(None, path.split(".")):
        if not isinstance(value, Mapping):
            return MISSING
        if name in value:
            value = value[name]
            continue
        key = _FIELDS.get(name, name[:1].lower() + name[1:])
        value = value.get(key, MISSING) if key else value
    return value


def _default(fallback: Any, value: Any = MISSING) -> Any:
    return value if _truth(value) else fallback


def _index(value: Any, *keys: Any) -> Any:
    for key in keys:
        try:
            value = value[key]
        except (KeyError, IndexError, TypeError):
            return MISSING
    return value


FUNCTIONS: Mapping[str, Callable[..., Any]] = {
    "eq": lambda a, *b: any(a == x for x in b),
    "ne": lambda a, b: a != b,
    "not": lambda a: not _truth(a),
    "and": lambda *a: next((x for x in a if not _truth(x)), a[-1]),
    "or": lambda *a: next((x for x in a if _truth(x)), a[-1]),
    "len": lambda a: len(a) if a is not MISSING else 0,
    "index": _index,
    "default": _default,
    "quote": lambda a: json.dumps(_show(a)),
    "toJson": lambda a: json.dumps(None if a is MISSING else a, separators=(",", ":")),
}
