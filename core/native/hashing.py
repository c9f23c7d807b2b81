"""Consistent hashing, sans-IO: the route's hash policies (which request key), and the two
tables Envoy hashes keys onto (ring hash, Maglev).

A route's ``hash_policy`` entries each hash one thing of the request (a header, a cookie,
the client's address, a query parameter); their hashes combine as Envoy's do (the running
hash rotated left one bit, then xor), and an entry marked ``terminal`` that produced a
hash ends the list. A cookie policy with a ``ttl`` makes the cookie when the request lacks
it: its value comes from the downstream addresses (Envoy's way), so a client keeps its
host, and the proxy sets it in the response.

Both tables give the same host for the same key while the host set stays, and when a host
leaves, the ring moves only the keys that host had (Maglev nearly so: a few more move,
the price of its even spread). Hashes are 64-bit BLAKE2b, the same in every process.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl

import attrs

MASK = 2**64 - 1
RING_MIN = 1024  # Envoy's ring_hash_lb_config defaults
RING_MAX = 8 * 1024 * 1024
MAGLEV_SIZE = 65537  # Envoy's default table size (a prime)


def hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


@attrs.frozen
class HashPolicy:
    """One ``RouteAction.hash_policy`` (or tcp_proxy's) entry."""

    kind: str  # header | cookie | source_ip | query_parameter
    name: str = ""
    ttl: float | None = None  # cookie: generate it when missing (0: a session cookie)
    path: str = ""  # cookie
    terminal: bool = False


@attrs.frozen
class RequestKey:
    """What hashing a request gave: the hash (None: nothing to hash, any host will do)
    and the ``Set-Cookie`` value for a generated cookie."""

    hash: int | None
    set_cookie: str = ""


def _cookie(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    for key, value in headers:
        if key.lower() != "cookie":
            continue
        for part in value.split(";"):
            found, _, found_value = part.strip().partition("=")
            if found == name:
                return found_value.strip().strip('"')
    return None


def _query(target: str, name: str) -> str | None:
    _, _, query = target.partition("?")
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == name:
            return value
    return None


def set_cookie_value(policy: HashPolicy, value: str) -> str:
    """The ``Set-Cookie`` header value Envoy writes for a generated cookie."""
    parts = [f'{policy.name}="{value}"']
    if policy.ttl:
        parts.append(f"Max-Age={int(policy.ttl)}")
    if policy.path:
        parts.append(f"Path={policy.path}")
    parts.append("HttpOnly")
    return "; ".join(parts)


def request_key(policies: Sequence[HashPolicy], headers: Sequence[tuple[str, str]],
                target: str = "/", source: str = "", local: str = "") -> RequestKey:
    """Hash a request by the route's policies; ``source`` is the client's address (an IP,
    with or without the port), ``local`` the address it reached (with ``source``, what a
    generated cookie's value comes from)."""
    combined: int | None = None
    set_cookie = ""
    by_name: Mapping[str, list[str]] = {}
    for policy in policies:
        text: str | None = None
        if policy.kind == "header":
            if not by_name:
                by_name = _headers(headers)
            values = by_name.get(policy.name.lower())
            text = ",".join(values) if values else None
        elif policy.kind == "cookie":
            text = _cookie(headers, policy.name)
            if text is None and policy.ttl is not None:
                text = f"{hash64(source + local):016x}"
                set_cookie = set_cookie_value(policy, text)
        elif policy.kind == "source_ip":
            text = _ip(source) or None
        elif policy.kind == "query_parameter":
            text = _query(target, policy.name)
        if text is None:
            continue
        value = hash64(text)
        combined = value if combined is None else (
            ((combined << 1) | (combined >> 63)) & MASK) ^ value
        if policy.terminal:
            break
    return RequestKey(combined, set_cookie)


def _ip(address: str) -> str:
    """The IP of ``ip``, ``ip:port`` or ``[ip]:port``."""
    if address.startswith("["):
        return address[1:address.find("]")]
    return address.partition(":")[0] if address.count(":") == 1 else address


def _headers(headers: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, value in headers:
        out.setdefault(key.lower(), []).append(value)
    return out


Host = tuple[str, int]


@attrs.frozen
class Ring:
    """Envoy's ring hash: each host hashed onto the ring many times (the heaviest
    ``minimum`` times, the others by their weight against it; at most ``maximum`` in all);
    a key goes to the first host at or after its hash."""

    hashes: tuple[int, ...]
    hosts: tuple[Host, ...]

    @classmethod
    def build(cls, weighted: Sequence[tuple[Host, float]], minimum: int = RING_MIN,
              maximum: int = RING_MAX) -> Ring:
        # Each host's entries depend on its own weight (against the heaviest), not on how
        # many hosts there are: a host leaving takes its entries and moves no other keys.
        heaviest = max((w for _, w in weighted), default=1.0) or 1.0
        counts = [math.ceil(minimum * w / heaviest) if w > 0 else 0 for _, w in weighted]
        if sum(counts) > maximum:
            counts = [max(1, c * maximum // sum(counts)) if c else 0 for c in counts]
        entries: list[tuple[int, Host]] = []
        for (host, _), count in zip(weighted, counts, strict=True):
            name = f"{host[0]}:{host[1]}"
            for block in range(0, count, 8):  # eight ring points from each digest
                digest = hashlib.blake2b(f"{name}_{block}".encode()).digest()
                entries.extend((int.from_bytes(digest[i * 8:i * 8 + 8], "big"), host)
                               for i in range(min(8, count - block)))
        entries.sort()
        return cls(tuple(h for h, _ in entries), tuple(h for _, h in entries))

    def lookup(self, key: int, avoid: frozenset[Host] | set[Host] = frozenset()
               ) -> Host | None:
        if not self.hosts:
            return None
        start = bisect.bisect_left(self.hashes, key)
        for step in range(len(self.hosts)):  # walk on past hosts a retry avoids
            host = self.hosts[(start + step) % len(self.hosts)]
            if host not in avoid:
                return host
        return self.hosts[start % len(self.hosts)]


@attrs.frozen
class Maglev:
    """Maglev's lookup table (Eisenbud et al.): each host fills the table along its own
    permutation, in turns weighted by the host's weight; a key is an index."""

    table: tuple[Host, ...]

    @classmethod
    def build(cls, weighted: Sequence[tuple[Host, float]], size: int = MAGLEV_SIZE) -> Maglev:
        live = [(host, weight) for host, weight in weighted if weight > 0]
        if not live:
            return cls(())
        heaviest = max(w for _, w in live)
        offsets, skips, nexts, credit = [], [], [0] * len(live), [0.0] * len(live)
        for host, _ in live:
            name = f"{host[0]}:{host[1]}"
            offsets.append(hash64(name) % size)
            skips.append(hash64(name + "#skip") % (size - 1) + 1)
        table: list[int] = [-1] * size
        filled = 0
        while filled < size:
            for index, (_, weight) in enumerate(live):
                credit[index] += weight / heaviest
                if credit[index] < 1.0:
                    continue
                credit[index] -= 1.0
                slot = (offsets[index] + nexts[index] * skips[index]) % size
                while table[slot] >= 0:
                    nexts[index] += 1
                    slot = (offsets[index] + nexts[index] * skips[index]) % size
                table[slot] = index
                nexts[index] += 1
                filled += 1
                if filled == size:
                    break
        return cls(tuple(live[i][0] for i in table))

    def lookup(self, key: int, avoid: frozenset[Host] | set[Host] = frozenset()
               ) -> Host | None:
        if not self.table:
            return None
        size = len(self.table)
        for step in range(min(size, 64)):  # a retry avoiding hosts tries the next slots
            host = self.table[(key + step) % size]
            if host not in avoid:
                return host
        return self.table[key % size]


def route_policies(messages: Sequence[Any]) -> tuple[HashPolicy, ...]:
    """``RouteAction.hash_policy`` entries (the subset lets only these kinds through)."""
    out = []
    for message in messages:
        which = message.WhichOneof("policy_specifier")
        if which == "header":
            out.append(HashPolicy("header", message.header.header_name.lower(),
                                  terminal=message.terminal))
        elif which == "cookie":
            cookie = message.cookie
            out.append(HashPolicy("cookie", cookie.name, cookie.ttl.ToTimedelta(
                ).total_seconds() if cookie.HasField("ttl") else None, cookie.path,
                message.terminal))
        elif which == "connection_properties" and message.connection_properties.source_ip:
            out.append(HashPolicy("source_ip", terminal=message.terminal))
        elif which == "query_parameter":
            out.append(HashPolicy("query_parameter", message.query_parameter.name,
                                  terminal=message.terminal))
    return tuple(out)


def tcp_policies(messages: Sequence[Any]) -> tuple[HashPolicy, ...]:
    """tcp_proxy's ``hash_policy`` (``envoy.type.v3.HashPolicy``): the source IP."""
    return tuple(HashPolicy("source_ip") for m in messages
                 if m.WhichOneof("policy_specifier") == "source_ip")
