"""Envoy's access-log format strings, sans-IO: a format compiled once per config, a line
per request or connection rendered from an :class:`Entry`.

The command operators Istio's default format uses are known; any other renders as ``-``
(Envoy's "no value"), as an operator whose value is missing does.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Callable, Mapping, Sequence

import attrs

# Envoy's default format, for a stdout log that names none.
DEFAULT_FORMAT = ('[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% '
                  '%PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% '
                  '%DURATION% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" '
                  '"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"\n')
_OPERATOR = re.compile(r"%([A-Z_]+)(?:\(([^)]*)\))?(?::\d+)?%")


@attrs.define
class Entry:
    start: float  # epoch seconds
    method: str = ""
    path: str = ""
    protocol: str = ""
    status: int = 0
    flags: str = "-"
    details: str = "-"
    received: int = 0
    sent: int = 0
    duration_ms: int = 0
    cluster: str = ""
    upstream: str = ""
    downstream_remote: str = ""
    downstream_local: str = ""
    server_name: str = ""
    route: str = ""
    headers: Sequence[tuple[str, str]] = ()  # the request's, names lower-cased


Render = Callable[[Entry], str]  # one operator's text for an entry
_second: list[tuple[int, str]] = [(-1, "")]  # the last second rendered, as text
_millisecond: list[tuple[int, str]] = [(-1, "")]  # the last millisecond, as text


def _start(entry: Entry) -> str:
    # Lines come many a millisecond under load: each millisecond's text is made once.
    ms = int(entry.start * 1000)
    last, text = _millisecond[0]
    if ms == last:
        return text
    whole, part = divmod(ms, 1000)
    second, prefix = _second[0]
    if whole != second:  # the date and time change once a second, not once a request
        moment = datetime.datetime.fromtimestamp(whole, datetime.UTC)
        prefix = moment.strftime("%Y-%m-%dT%H:%M:%S.")
        _second[0] = (whole, prefix)
    text = f"{prefix}{part:03d}Z"
    _millisecond[0] = (ms, text)
    return text


def _request_header(argument: str, hold: Callable[[object], str]) -> str:
    """``%REQ(A?B)%``: header A, else B (pseudo-headers as the request tells them), as
    an expression of the compiled format: ``h`` holds the request's headers by name, the
    first value of each (one dict a line, built in C, in place of a scan of the headers
    for each operator)."""
    terms = []
    for name in argument.lower().split("?"):
        if name in (":method", ":path"):  # always told: what follows is never read
            terms.append("e.method" if name == ":method" else "e.path")
            break
        terms.append(f"h.get({hold('host' if name == ':authority' else name)})")
    return f"{' or '.join(terms)} or {hold('-')}"


# An operator is rendered by a function made from its argument, or, for a plain field of
# the entry, read in place: ("text", name) is the field or "-" when empty, ("number",
# name) the field as digits; ("request", "headers") is a request header (``REQ``).
Operator = Callable[[str], Render] | tuple[str, str]

OPERATORS: Mapping[str, Operator] = {
    "START_TIME": lambda _: _start,
    "REQ": ("request", "headers"),
    "PROTOCOL": ("text", "protocol"),
    "RESPONSE_CODE": ("number", "status"),
    "RESPONSE_FLAGS": ("text", "flags"),
    "RESPONSE_CODE_DETAILS": ("text", "details"),
    "BYTES_RECEIVED": ("number", "received"),
    "BYTES_SENT": ("number", "sent"),
    "DURATION": ("number", "duration_ms"),
    "UPSTREAM_CLUSTER": ("text", "cluster"),
    "UPSTREAM_CLUSTER_RAW": ("text", "cluster"),
    "UPSTREAM_HOST": ("text", "upstream"),
    "DOWNSTREAM_REMOTE_ADDRESS": ("text", "downstream_remote"),
    "DOWNSTREAM_LOCAL_ADDRESS": ("text", "downstream_local"),
    "REQUESTED_SERVER_NAME": ("text", "server_name"),
    "ROUTE_NAME": ("text", "route"),
}


@attrs.frozen
class Format:
    """A compiled format: ``render(entry)`` is the line."""

    render: Render


def compile_format(text: str) -> Format:
    """The format as one function, written out and compiled once per config: a line is
    rendered per request on the proxy's core, and a call per operator was a third of the
    cost (the same reason attrs writes its classes' methods out). The line is one
    f-string; the format's own text (and what it reads by name) is held in the
    function's namespace, so no text of the format is ever read as code."""
    names: dict[str, object] = {"_reversed": reversed}
    pieces: list[str] = []  # the f-string's fields
    literal = ""  # text not yet held: runs of it (and unknown operators) become one
    headers = False  # whether an operator reads the request's headers

    def hold(value: object) -> str:
        name = f"_v{len(names)}"
        names[name] = value
        return name

    at = 0
    for match in _OPERATOR.finditer(text):
        literal += text[at:match.start()]
        at = match.end()
        operator = OPERATORS.get(match.group(1))
        if operator is None:
            literal += "-"
            continue
        if literal:
            pieces.append(hold(literal))
            literal = ""
        if isinstance(operator, tuple) and operator[0] == "request":
            headers = True
            pieces.append(_request_header(match.group(2) or "", hold))
        elif isinstance(operator, tuple):
            kind, field = operator
            pieces.append(f"e.{field} or {hold('-')}" if kind == "text" else f"e.{field}")
        else:
            pieces.append(f"{hold(operator(match.group(2) or ''))}(e)")
    literal += text[at:]
    if literal:
        pieces.append(hold(literal))
    # the first value of a repeated header wins: the reversed list's last
    table = "    h = dict(_reversed(e.headers))\n" if headers else ""
    line = "".join(f"{{{piece}}}" for piece in pieces)
    source = f"def render(e):\n{table}    return f'{line}'\n"
    exec(compile(source, "<access log format>", "exec"), names)
    return Format(names["render"])  # type: ignore[arg-type]


# Operators whose "-" Envoy writes as text in a JSON line (no flags); every other operator
# alone without a value is null.
_DASH_IS_A_VALUE = frozenset({"RESPONSE_FLAGS"})


def compile_json(shape: Mapping[str, object]) -> Format:
    """A format dictionary (``json_format``): one JSON object a line, as Envoy writes it. A
    value that is one operator alone keeps its type (a number for the counts and the
    status, ``null`` when it has no value); any other string is rendered as a format
    string; numbers, booleans and nested objects are taken as they are."""
    render = _json_value(shape)

    def line(entry: Entry) -> str:
        return json.dumps(render(entry), separators=(",", ":")) + "\n"
    return Format(line)


def _json_value(value: object) -> Callable[[Entry], object]:
    if isinstance(value, Mapping):
        fields = [(str(key), _json_value(item)) for key, item in value.items()]
        return lambda entry: {key: render(entry) for key, render in fields}
    if not isinstance(value, str):
        return lambda _: value
    alone = _OPERATOR.fullmatch(value)
    operator = OPERATORS.get(alone.group(1)) if alone is not None else None
    if isinstance(operator, tuple) and operator[0] == "number":
        field = operator[1]
        return lambda entry: getattr(entry, field)
    text = compile_format(value).render
    if alone is None or alone.group(1) in _DASH_IS_A_VALUE:
        return text

    def typed(entry: Entry) -> object:
        rendered = text(entry)
        return None if rendered == "-" else rendered
    return typed
