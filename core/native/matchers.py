"""Envoy's value matchers, compiled once per config: strings, headers, paths with their
headers and query parameters, and CIDR blocks. Routing, RBAC and JWT rules share them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

import attrs
import re2  # type: ignore[import-untyped]
from envoy.config.route.v3 import route_components_pb2


@attrs.frozen
class StringMatch:
    kind: str  # exact | prefix | suffix | contains | regex | present
    value: str = ""
    ignore_case: bool = False
    pattern: Any = None

    def holds(self, text: str) -> bool:
        if self.kind == "present":
            return True
        subject, value = (text.lower(), self.value.lower()) if self.ignore_case else \
            (text, self.value)
        if self.kind == "exact":
            return subject == value
        if self.kind == "prefix":
            return subject.startswith(value)
        if self.kind == "suffix":
            return subject.endswith(value)
        if self.kind == "contains":
            return value in subject
        return bool(self.pattern.fullmatch(text))


def string_match(matcher: Any) -> StringMatch:
    kind = matcher.WhichOneof("match_pattern")
    if kind is None:
        raise ValueError("a string matcher without a pattern (exact, prefix, suffix, "
                         "contains or safe_regex)")
    if kind == "safe_regex":
        return StringMatch("regex", matcher.safe_regex.regex,
                           pattern=re2.compile(matcher.safe_regex.regex))
    return StringMatch(str(kind), getattr(matcher, str(kind)), matcher.ignore_case)


@attrs.frozen
class HeaderMatch:
    name: str
    match: StringMatch | None  # None: present
    invert: bool = False
    present: bool = True

    def holds(self, headers: Mapping[str, str]) -> bool:
        value = headers.get(self.name)
        if self.match is None:
            found = value is not None
            return found != self.invert if self.present else found == self.invert
        result = value is not None and self.match.holds(value)
        return result != self.invert


def header_match(matcher: route_components_pb2.HeaderMatcher) -> HeaderMatch:
    kind = matcher.WhichOneof("header_match_specifier")
    name = matcher.name.lower()
    if kind in (None, "present_match"):
        return HeaderMatch(name, None, matcher.invert_match,
                           matcher.present_match if kind else True)
    if kind == "string_match":
        return HeaderMatch(name, string_match(matcher.string_match), matcher.invert_match)
    if kind == "safe_regex_match":
        regex = matcher.safe_regex_match.regex
        return HeaderMatch(name, StringMatch("regex", regex, pattern=re2.compile(regex)),
                           matcher.invert_match)
    value = getattr(matcher, str(kind))
    return HeaderMatch(name, StringMatch(str(kind).removesuffix("_match"), value),
                       matcher.invert_match)


@attrs.frozen
class RouteMatch:
    kind: str  # prefix | path | regex | separated
    value: str
    case_sensitive: bool = True
    pattern: Any = None
    headers: tuple[HeaderMatch, ...] = ()
    query: tuple[tuple[str, StringMatch], ...] = ()

    def holds(self, path: str, headers: Mapping[str, str], query: Mapping[str, str]) -> bool:
        if not self._path(path.split("?", 1)[0]):
            return False
        if self.headers and not all(h.holds(headers) for h in self.headers):
            return False
        return not self.query or all(name in query and match.holds(query[name])
                                     for name, match in self.query)

    def _path(self, path: str) -> bool:
        subject, value = (path, self.value) if self.case_sensitive else \
            (path.lower(), self.value.lower())
        if self.kind == "prefix":
            return subject.startswith(value)
        if self.kind == "path":
            return subject == value
        if self.kind == "separated":
            return subject == value or subject.startswith(value + "/")
        if self.kind == "connect":  # a CONNECT request: routed with no path
            return not subject
        return bool(self.pattern.fullmatch(path))


def route_match(match: route_components_pb2.RouteMatch) -> RouteMatch:
    kind = match.WhichOneof("path_specifier")
    case = match.case_sensitive.value if match.HasField("case_sensitive") else True
    headers = tuple(header_match(h) for h in match.headers)
    query = tuple((q.name, string_match(q.string_match) if q.HasField("string_match")
                   else StringMatch("present")) for q in match.query_parameters)
    if kind == "safe_regex":
        return RouteMatch("regex", match.safe_regex.regex, case,
                          re2.compile(match.safe_regex.regex), headers, query)
    if kind == "connect_matcher":
        return RouteMatch("connect", "", case, None, headers, query)
    if kind == "path_separated_prefix":
        return RouteMatch("separated", match.path_separated_prefix, case, None, headers, query)
    return RouteMatch(str(kind or "prefix"), getattr(match, str(kind or "prefix")), case,
                      None, headers, query)


@attrs.frozen
class Cidr:
    """An address block (``CidrRange``)."""

    network: Any

    def holds(self, address: str) -> bool:
        try:
            return ipaddress.ip_address(address.split("%", 1)[0]) in self.network
        except ValueError:
            return False


def cidr(block: Any) -> Cidr:
    length = block.prefix_len.value if block.HasField("prefix_len") else None
    text = block.address_prefix if length is None else f"{block.address_prefix}/{length}"
    return Cidr(ipaddress.ip_network(text, strict=False))


@attrs.frozen
class ValueMatch:
    """A ``ValueMatcher`` over a JSON-like value (dynamic metadata)."""

    kind: str  # string | present | list | bool | null
    string: StringMatch | None = None
    element: ValueMatch | None = None  # list: any element matches this
    flag: bool = False

    def holds(self, value: Any) -> bool:
        if self.kind == "present":
            return value is not None
        if self.kind == "null":
            return value is None
        if self.kind == "bool":
            return value is self.flag
        if self.kind == "list":
            return isinstance(value, list) and self.element is not None and \
                any(self.element.holds(item) for item in value)
        return isinstance(value, str) and self.string is not None and self.string.holds(value)


def value_match(matcher: Any) -> ValueMatch:
    kind = matcher.WhichOneof("match_pattern")
    if kind == "string_match":
        return ValueMatch("string", string_match(matcher.string_match))
    if kind == "present_match":
        return ValueMatch("present")
    if kind == "null_match":
        return ValueMatch("null")
    if kind == "bool_match":
        return ValueMatch("bool", flag=matcher.bool_match)
    if kind == "list_match":
        return ValueMatch("list", element=value_match(matcher.list_match.one_of))
    raise ValueError(f"value matcher {kind} is not supported by the native proxy")


@attrs.frozen
class MetadataMatch:
    """A ``MetadataMatcher``: the value at ``path`` under ``filter``'s dynamic metadata."""

    filter: str
    path: tuple[str, ...]
    value: ValueMatch
    invert: bool = False

    def holds(self, metadata: Mapping[str, Any]) -> bool:
        found: Any = metadata.get(self.filter)
        for key in self.path:
            found = found.get(key) if isinstance(found, Mapping) else None
        return self.value.holds(found) != self.invert


def metadata_match(matcher: Any) -> MetadataMatch:
    return MetadataMatch(matcher.filter, tuple(segment.key for segment in matcher.path),
                         value_match(matcher.value), matcher.invert)


def path_template(template: str) -> Any:
    """A URI template (``/a/*/b/**``: ``*`` one segment, ``**`` any number) as a pattern
    over the path without its query."""
    parts = []
    for segment in template.split("/"):
        if segment == "**":
            parts.append(".*")
        elif segment == "*":
            parts.append("[^/]+")
        else:
            parts.append(re2.escape(segment))
    return re2.compile("/".join(parts))
