"""Envoy's access-log format strings, sans-IO: a format compiled once per config, a line
per request or connection rendered from an :class:`Entry`.

The command operators Istio's default format uses are known; any other renders as ``-``
(Envoy's "no value"), as an operator whose value is missing does.
"""

from __future__ import annotations

import datetime
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


def _start(entry: Entry) -> str:
    whole = int(entry.start)
    second, text = _second[0]
    if whole != second:  # the date and time change once a second, not once a request
        moment = datetime.datetime.fromtimestamp(whole, datetime.UTC)
        text = moment.strftime("%Y-%m-%dT%H:%M:%S.")
        _second[0] = (whole, text)
    return f"{text}{int((entry.start - whole) * 1000):03d}Z"


def _request_header(argument: str) -> Render:
    """``%REQ(A?B)%``: header A, else B (pseudo-headers as the request tells them)."""
    names = tuple("host" if name == ":authority" else name
                  for name in argument.lower().split("?"))

    def render(entry: Entry) -> str:
        for name in names:
            if name == ":method":
                return entry.method or "-"
            if name == ":path":
                return entry.path or "-"
            for key, value in entry.headers:
                if key == name and value:
                    return value
        return "-"
    return render


def _field(name: str) -> Callable[[str], Render]:
    def render(entry: Entry) -> str:
        value = getattr(entry, name)
        return str(value) if value not in ("", None) else "-"
    return lambda _: render


def _number(name: str) -> Callable[[str], Render]:
    def render(entry: Entry) -> str:
        return str(getattr(entry, name))
    return lambda _: render


# Each operator's renderer, made once per format from the operator's argument.
OPERATORS: Mapping[str, Callable[[str], Render]] = {
    "START_TIME": lambda _: _start,
    "REQ": _request_header,
    "PROTOCOL": _field("protocol"),
    "RESPONSE_CODE": _number("status"),
    "RESPONSE_FLAGS": _field("flags"),
    "RESPONSE_CODE_DETAILS": _field("details"),
    "BYTES_RECEIVED": _number("received"),
    "BYTES_SENT": _number("sent"),
    "DURATION": _number("duration_ms"),
    "UPSTREAM_CLUSTER": _field("cluster"),
    "UPSTREAM_CLUSTER_RAW": _field("cluster"),
    "UPSTREAM_HOST": _field("upstream"),
    "DOWNSTREAM_REMOTE_ADDRESS": _field("downstream_remote"),
    "DOWNSTREAM_LOCAL_ADDRESS": _field("downstream_local"),
    "REQUESTED_SERVER_NAME": _field("server_name"),
    "ROUTE_NAME": _field("route"),
}


@attrs.frozen
class Format:
    parts: tuple[str | Render, ...]  # literal text, or an operator's renderer

    def render(self, entry: Entry) -> str:
        return "".join([part if isinstance(part, str) else part(entry) for part in self.parts])


def compile_format(text: str) -> Format:
    parts: list[str | Render] = []
    at = 0
    for match in _OPERATOR.finditer(text):
        if match.start() > at:
            parts.append(text[at:match.start()])
        operator = OPERATORS.get(match.group(1))
        parts.append(operator(match.group(2) or "") if operator else "-")
        at = match.end()
    if at < len(text):
        parts.append(text[at:])
    return Format(tuple(parts))
