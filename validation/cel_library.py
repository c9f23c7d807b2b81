"""The CEL functions Kubernetes adds (and two it types strictly) for Istio's CRD rules.

cel-python implements standard CEL. The API server also offers Kubernetes' libraries;
Istio's rules use ``url()``/``isURL()`` with ``getScheme()`` and the strings extension's
``substring()``. We also replace ``int()`` and ``duration()`` so that a value that does
not convert fails with a plain reason (cel-python's own errors are Python reprs).

A function that fails on the data returns a `CELEvalError` *value* (CEL's logical
operators may still absorb it: ``false && error`` is false) and records the reason, so the
caller can report it if the error ends up being the rule's result.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import attrs
from celpy import celtypes
from celpy.evaluation import CELEvalError

from pilotfish.validation.names import parse_duration

_reasons: ContextVar[list[str] | None] = ContextVar("cel_data_errors", default=None)


@contextmanager
def recording() -> Iterator[list[str]]:
    """Collect the reasons data-dependent failures gave during one evaluation."""
    reasons: list[str] = []
    token = _reasons.set(reasons)
    try:
        yield reasons
    finally:
        _reasons.reset(token)


def _fail(reason: str) -> CELEvalError:
    reasons = _reasons.get()
    if reasons is not None:
        reasons.append(reason)
    return CELEvalError(reason)


def cel_int(value: Any) -> Any:
    if isinstance(value, celtypes.StringType):
        try:
            return celtypes.IntType(int(str(value), 10))
        except ValueError:
            return _fail(f"type conversion error from 'string' to 'int': {str(value)!r}")
    if isinstance(value, celtypes.DoubleType):
        return celtypes.IntType(int(value))
    if isinstance(value, celtypes.IntType | celtypes.UintType | celtypes.BoolType):
        return celtypes.IntType(int(value))
    raise TypeError(f"no int() for {type(value).__name__}")  # cel-python: no such overload


_MAX_SECONDS = 315576000000  # the range of google.protobuf.Duration


def cel_duration(value: Any) -> Any:
    if isinstance(value, celtypes.DurationType):
        return value
    if not isinstance(value, celtypes.StringType):
        raise TypeError(f"no duration() for {type(value).__name__}")
    nanos = parse_duration(str(value))
    if nanos is None or abs(nanos) // 10**9 > _MAX_SECONDS:
        return _fail(f"type conversion error from 'string' to 'duration': {str(value)!r}")
    seconds, rest = divmod(nanos, 10**9)
    return celtypes.DurationType(seconds, rest)


def cel_substring(text: Any, start: Any, end: Any = None) -> Any:
    chars = str(text)  # CEL indexes code points, as Python does
    stop = len(chars) if end is None else int(end)
    if not 0 <= int(start) <= stop <= len(chars):
        return _fail(f"substring({start}, {stop}) is out of range for a string of "
                     f"length {len(chars)}")
    return celtypes.StringType(chars[int(start):stop])


@attrs.frozen
class URL:
    """What Kubernetes' ``url()`` returns; its parts are read with getScheme() and friends."""

    scheme: str
    host: str  # host[:port] as written, "" when there is no authority
    path: str
    query: str

    @property
    def hostname(self) -> str:
        host = self.host
        if host.startswith("["):
            return host[1:host.index("]")]
        return host.rpartition(":")[0] if ":" in host else host

    @property
    def port(self) -> str:
        tail = self.host[self.host.index("]") + 1:] if self.host.startswith("[") else self.host
        return tail.rpartition(":")[2] if ":" in tail else ""


_DIGITS = frozenset(string.digits)
_SCHEME_CHARS = frozenset(string.ascii_letters + string.digits + "+-.")
_USERINFO_CHARS = frozenset(string.ascii_letters + string.digits + "-._:~!$&'()*+,;=%@")
_HOST_CHARS = frozenset(string.ascii_letters + string.digits + "-_.~!$&'()*+,;=:[]<>\"%")


def parse_request_uri(raw: str) -> URL:
    """Parse as Go's ``url.ParseRequestURI`` (which ``url()`` and ``isURL()`` use).

    Accepts absolute URIs and absolute paths; raises ValueError with the reason otherwise.
    """
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in raw):
        raise ValueError("invalid control character in URL")
    if not raw:
        raise ValueError("empty url")
    if raw == "*":
        return URL("", "", "*", "")
    scheme, rest = _split_scheme(raw)
    if rest.endswith("?") and rest.count("?") == 1:
        rest, query = rest[:-1], ""
    else:
        rest, _, query = rest.partition("?")
    if not rest.startswith("/"):
        if scheme:
            return URL(scheme, "", rest, query)  # opaque, like mailto:someone
        raise ValueError("invalid URI for request")
    host = ""
    if scheme and rest.startswith("//"):
        authority, slash, path = rest[2:].partition("/")
        host = _check_authority(authority)
        rest = slash + path
    _check_escapes(rest)
    return URL(scheme, host, rest, query)


def _split_scheme(raw: str) -> tuple[str, str]:
    for index, char in enumerate(raw):
        if char == ":":
            if index == 0:
                raise ValueError("missing protocol scheme")
            return raw[:index].lower(), raw[index + 1:]
        if char not in _SCHEME_CHARS or (index == 0 and not char.isalpha()):
            break
    return "", raw


def _check_authority(authority: str) -> str:
    userinfo, at, host = authority.rpartition("@")
    if at and not set(userinfo) <= _USERINFO_CHARS:
        raise ValueError("invalid userinfo")
    if host.startswith("["):
        close = host.rfind("]")
        if close < 0:
            raise ValueError("missing ']' in host")
        _check_port(host[close + 1:])
    elif ":" in host:
        _check_port(host[host.rfind(":"):])
    bad = [c for c in host if ord(c) < 0x80 and c not in _HOST_CHARS]
    if bad:
        raise ValueError(f"invalid character {bad[0]!r} in host name")
    _check_escapes(host)
    return host


def _check_port(colon_port: str) -> None:
    # An optional ":digits" after the host; a bare ":" is allowed.
    if colon_port and (colon_port[0] != ":" or not set(colon_port[1:]) <= _DIGITS):
        raise ValueError(f"invalid port {colon_port!r} after host")


def _check_escapes(text: str) -> None:
    index = text.find("%")
    while index >= 0:
        escape = text[index:index + 3]
        if len(escape) < 3 or not all(c in string.hexdigits for c in escape[1:]):
            raise ValueError(f"invalid URL escape {escape!r}")
        index = text.find("%", index + 3)


def cel_url(value: Any) -> Any:
    try:
        return parse_request_uri(str(value))
    except ValueError as exc:
        return _fail(f"URL parse error during conversion from string: {exc}")


def cel_is_url(value: Any) -> Any:
    try:
        parse_request_uri(str(value))
    except ValueError:
        return celtypes.BoolType(False)
    return celtypes.BoolType(True)


def _url_part(read: Callable[[URL], str]) -> Callable[[Any], Any]:
    def part(url: Any) -> Any:
        if not isinstance(url, URL):
            raise TypeError("expected a URL")  # cel-python reports: no such overload
        return celtypes.StringType(read(url))

    return part


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "int": cel_int,
    "duration": cel_duration,
    "substring": cel_substring,
    "url": cel_url,
    "isURL": cel_is_url,
    "getScheme": _url_part(lambda u: u.scheme),
    "getHost": _url_part(lambda u: u.host),
    "getHostname": _url_part(lambda u: u.hostname),
    "getPort": _url_part(lambda u: u.port),
    "getEscapedPath": _url_part(lambda u: u.path),
}
