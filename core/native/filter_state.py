"""Filter state and the internal hop, sans-IO: what Envoy's ``set_filter_state`` filters
write on a connection or request, what of it travels to an internal listener, and where
that listener's original destination filter finds the address to restore.

A waypoint needs this because its three listeners are one path cut in two internal hops
(``connect_terminate`` → ``main_internal`` → ``connect_originate``): no socket carries the
CONNECT's ``:authority``, the client's SPIFFE ID or the pod's identity from one to the next,
so they ride along as filter state (values a filter set, each marked whether it is shared
with the upstream once or all the way) and as the upstream host's metadata (Envoy's
``internal_upstream`` transport passes the namespaces it names). Format strings are
compiled once per config; an operator the proxy cannot render refuses the config.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from pilotfish.core.native import subset

# How far a value goes (FilterStateValue.SharedWithUpstream).
NONE, ONCE, TRANSITIVE = 0, 1, 2

LOCAL_IP = "envoy.filters.listener.original_dst.local_ip"
REMOTE_IP = "envoy.filters.listener.original_dst.remote_ip"
ORIGINAL_DST_METADATA = "envoy.filters.listener.original_dst"
UPSTREAM_SANS = "envoy.network.upstream_subject_alt_names"


@attrs.frozen
class Value:
    value: str
    shared: int = NONE


State = Mapping[str, Value]
Metadata = Mapping[str, Mapping[str, str]]  # namespace → key → string value


@attrs.frozen
class Context:
    """What a format string may read: the request (HTTP only) and the connection."""

    headers: Mapping[str, str] = attrs.field(factory=dict)  # lower-case names, ":authority"
    remote: str = ""  # the downstream's address, "ip:port"
    local: str = ""  # the (restored) local address, "ip:port"
    peer_uri: str = ""  # the client certificate's URI SAN
    local_uri: str = ""  # our own certificate's URI SAN
    metadata: Metadata = attrs.field(factory=dict)  # the connection's dynamic metadata


Render = Callable[[Context], str]
_OPERATOR = re.compile(r"%([A-Z_]+)(?:\(([^)]*)\))?%")
_PLAIN: Mapping[str, Render] = {
    "DOWNSTREAM_REMOTE_ADDRESS": lambda c: c.remote,
    "DOWNSTREAM_LOCAL_ADDRESS": lambda c: c.local,
    "DOWNSTREAM_PEER_URI_SAN": lambda c: c.peer_uri,
    "DOWNSTREAM_LOCAL_URI_SAN": lambda c: c.local_uri,
}


def _operator(name: str, argument: str | None, where: str) -> Render:
    if name in _PLAIN and argument is None:
        return _PLAIN[name]
    if name == "REQ" and argument:
        header = argument.lower()

        def request_header(context: Context) -> str:
            return context.headers.get(header, "")
        return request_header
    if name == "DYNAMIC_METADATA" and argument and argument.count(":") == 1:
        namespace, key = argument.split(":")

        def dynamic_metadata(context: Context) -> str:
            return context.metadata.get(namespace, {}).get(key, "")
        return dynamic_metadata
    raise subset.Unsupported(where, f"format operator %{name}% is not supported by the "
                             "native proxy")


def compile_text(text: str, where: str) -> Render:
    """A format string as a function of the context (literal text kept as it is)."""
    parts: list[Render] = []
    at = 0
    for match in _OPERATOR.finditer(text):
        if match.start() > at:
            parts.append(_literal(text[at:match.start()]))
        parts.append(_operator(match.group(1), match.group(2), where))
        at = match.end()
    if text[at:]:
        parts.append(_literal(text[at:]))
    if len(parts) == 1:
        return parts[0]

    def joined(context: Context) -> str:
        return "".join(part(context) for part in parts)
    return joined


def _literal(text: str) -> Render:
    def literal(_context: Context) -> str:
        return text
    return literal


@attrs.frozen
class Setter:
    """One ``FilterStateValue``: the key, how its value is made, how far it is shared."""

    key: str
    render: Render = attrs.field(eq=False)
    shared: int = NONE
    skip_if_empty: bool = False

    def apply(self, state: dict[str, Value], context: Context) -> None:
        value = self.render(context)
        if value or not self.skip_if_empty:
            state[self.key] = Value(value, self.shared)


def setters(values: Sequence[Any], where: str) -> tuple[Setter, ...]:
    """The ``FilterStateValue`` messages of one set_filter_state filter."""
    out = []
    for index, item in enumerate(values):
        at = f"{where}[{index}]"
        if not item.object_key:
            raise subset.Unsupported(f"{at}.object_key", "a filter state value needs a key")
        if item.format_string.HasField("json_format"):
            raise subset.Unsupported(f"{at}.format_string.json_format",
                                     "a filter state value is a text format")
        text = subset.data(item.format_string.text_format_source).decode() \
            or item.format_string.text_format
        out.append(Setter(item.object_key, compile_text(text, f"{at}.format_string"),
                          int(item.shared_with_upstream), item.skip_if_empty))
    return tuple(out)


def apply_all(found: Sequence[Setter], state: dict[str, Value], context: Context) -> None:
    for setter in found:
        setter.apply(state, context)


def upstream_share(state: State) -> dict[str, Value]:
    """What of ``state`` an internal upstream connection gets: the values shared with the
    upstream; those shared once arrive as the next hop's own, no further."""
    return {key: Value(v.value, TRANSITIVE if v.shared == TRANSITIVE else NONE)
            for key, v in state.items() if v.shared != NONE}


def shared_value(state: State, key: str) -> str:
    """A value shared with the upstream ("" when absent or kept to this hop)."""
    found = state.get(key)
    return found.value if found is not None and found.shared != NONE else ""


def address(text: str) -> tuple[str, int] | None:
    """``ip:port`` or ``[ipv6]:port`` (None when it is not one)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return None
    return host.strip("[]"), int(port)


def restored(state: State, metadata: Metadata) -> tuple[tuple[str, int] | None,
                                                        tuple[str, int] | None]:
    """(local, remote) as the original destination filter restores them on an internal
    listener: the local address from the filter state, else from the host metadata the
    hop passed through (``envoy.filters.listener.original_dst`` ``local``); the remote one
    from the filter state."""
    local_text = state[LOCAL_IP].value if LOCAL_IP in state else \
        metadata.get(ORIGINAL_DST_METADATA, {}).get("local", "")
    remote = state.get(REMOTE_IP)
    return address(local_text), address(remote.value) if remote is not None else None
