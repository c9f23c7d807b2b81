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


_second: list[tuple[int, str]] = [(-1, "")]  # the last second rendered, as text


def _start(entry: Entry, _: str) -> str:
    whole = int(entry.start)
    second, text = _second[0]
    if whole != second:  # the date and time change once a second, not once a request
        moment = datetime.datetime.fromtimestamp(whole, datetime.UTC)
        text = moment.strftime("%Y-%m-%dT%H:%M:%S.")
        _second[0] = (whole, text)
    return f"{text}{int((entry.start - whole) * 1000):03d}Z"


def _request_header(entry: Entry, argument: str) -> str:
    for name in argument.lower().split("?"):
        if name == ":method":
            return entry.method or "-"
        if name == ":path":
            return entry.path or "-"
        wanted = "host" if name == ":authority" else name
        for key, value in entry.headers:
            if key == wanted and value:
                return value
    return "-"


def _field(name: str) -> Callable[[Entry, str], str]:
    def render(entry: Entry, _: str) -> str:
        value = getattr(entry, name)
        return str(value) if value not in ("", None) else "-"
    return render


OPERATORS: Mapping[str, Callable[[Entry, str], str]] = {
    "START_TIME": _start,
    "REQ": _request_header,
    "PROTOCOL": _field("protocol"),
    "RESPONSE_CODE": lambda e, _: str(e.status),
    "RESPONSE_FLAGS": _field("flags"),
    "RESPONSE_CODE_DETAILS": _field("details"),
    "BYTES_RECEIVED": lambda e, _: str(e.received),
    "BYTES_SENT": lambda e, _: str(e.sent),
    "DURATION": lambda e, _: str(e.duration_ms),
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
    parts: tuple[str | tuple[Callable[[Entry, str], str], str], ...]

    def render(self, entry: Entry) -> str:
        return "".join([part if isinstance(part, str) else part[0](entry, part[1])
                        for part in self.parts])


def compile_format(text: str) -> Format:
    parts: list[str | tuple[Callable[[Entry, str], str], str]] = []
    at = 0
    for match in _OPERATOR.finditer(text):
        if match.start() > at:
            parts.append(text[at:match.start()])
        operator = OPERATORS.get(match.group(1))
        parts.append((operator, match.group(2) or "") if operator else "-")
        at = match.end()
    if at < len(text):
        parts.append(text[at:])
    return Format(tuple(parts))
