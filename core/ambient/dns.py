"""ztunnel's DNS proxy, sans-IO: the wire codec (RFC 1035) and the decision for one query.

An ambient pod's DNS (UDP and TCP port 53, to whatever server its resolv.conf names) is
redirected by the in-pod rules to ztunnel's 15053 in the pod. ztunnel answers the names
of the mesh from what Workload Discovery told it — a Service's hostname gets its VIPs (a
headless one, its workloads' addresses) — so that a Kubernetes service created after the
pod, or a ServiceEntry host with an address, resolves without any cluster DNS knowing it.
Everything else is forwarded unchanged to the upstream resolvers: ztunnel never makes up
an NXDOMAIN, since the name may exist upstream.

Names are matched as a Kubernetes client sends them through its search path (``search
NS.svc.DOMAIN svc.DOMAIN DOMAIN``): ``svc``, ``svc.ns``, ``svc.ns.svc`` and the FQDN, each as
is or with a search domain appended, relative to the asking pod's namespace — as Istio's
DNS proxy does, so the first query of a search already gets the answer.

A codec of its own rather than dnspython (not a dependency): a proxy needs the header,
one question and A/AAAA answers, and forwards every other message byte for byte.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterator, Sequence

import attrs

from pilotfish.core.addresses import is_ip
from pilotfish.core.ambient.state import WorkloadState

A, AAAA = 1, 28
CLASS_IN = 1
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
TTL = 30  # seconds: what Istio's DNS proxy gives its answers
UDP_LIMIT = 512  # a UDP answer without EDNS; longer ones are truncated (TC) for a TCP retry
MAX_NAME = 255
MAX_LABEL = 63
_HEADER = struct.Struct("!HHHHHH")
_QR, _AA, _TC, _RD, _RA = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080


class MalformedQuery(ValueError):
    """A message that is not a query this proxy can read; ``query_id`` is its id when the
    header held one (a FORMERR answer echoes it), else None (nothing can be answered)."""

    def __init__(self, message: str, query_id: int | None) -> None:
        super().__init__(message)
        self.query_id = query_id


@attrs.frozen
class Question:
    name: str  # lower case, no final dot; "" for the root
    qtype: int
    qclass: int


@attrs.frozen
class Query:
    """One parsed query: its id, flags, question and the bytes it came in (forwarded as
    they are)."""

    id: int
    flags: int
    question: Question
    wire: bytes
    question_end: int  # where the question ends in ``wire``: an answer echoes wire[12:end]

    @property
    def recursion_desired(self) -> bool:
        return bool(self.flags & _RD)


def _name(data: bytes, offset: int, query_id: int) -> tuple[str, int]:
    """The name at ``offset`` and the offset after it (compression pointers followed, each
    only backwards, so a loop cannot be built)."""
    labels: list[str] = []
    length = 0
    end: int | None = None
    position = offset
    while True:
        if position >= len(data):
            raise MalformedQuery(f"name at byte {offset} runs past the message "
                                 f"({len(data)} bytes)", query_id)
        size = data[position]
        if size & 0xC0 == 0xC0:
            if position + 1 >= len(data):
                raise MalformedQuery(f"pointer at byte {position} is cut short", query_id)
            target = ((size & 0x3F) << 8) | data[position + 1]
            if target >= position:
                raise MalformedQuery(f"pointer at byte {position} points forward "
                                     f"(to {target})", query_id)
            if end is None:
                end = position + 2
            position = target
            continue
        if size & 0xC0:
            raise MalformedQuery(f"label type {size >> 6:#x} at byte {position} is not "
                                 "defined", query_id)
        if size == 0:
            return ".".join(labels), (end if end is not None else position + 1)
        label = data[position + 1:position + 1 + size]
        if len(label) < size:
            raise MalformedQuery(f"label at byte {position} runs past the message", query_id)
        length += size + 1
        if length > MAX_NAME:
            raise MalformedQuery(f"name at byte {offset} is longer than {MAX_NAME} bytes",
                                 query_id)
        labels.append(label.decode("latin-1").lower())
        position += 1 + size


def parse_query(data: bytes) -> Query:
    """The query in ``data``; ``MalformedQuery`` when it is not one (a response, no
    question or several, a name that does not decode)."""
    if len(data) < _HEADER.size:
        raise MalformedQuery(f"{len(data)} bytes: shorter than a DNS header (12)",
                             int.from_bytes(data[:2]) if len(data) >= 2 else None)
    query_id, flags, questions, _, _, _ = _HEADER.unpack_from(data)
    if flags & _QR:
        raise MalformedQuery("a response, not a query", query_id)
    if questions != 1:
        raise MalformedQuery(f"{questions} questions (a query has one)", query_id)
    name, position = _name(data, _HEADER.size, query_id)
    if position + 4 > len(data):
        raise MalformedQuery("the question's type and class are cut short", query_id)
    qtype, qclass = struct.unpack_from("!HH", data, position)
    return Query(query_id, flags, Question(name, qtype, qclass), data, position + 4)


def opcode(query: Query) -> int:
    return (query.flags >> 11) & 0xF


def encode_name(name: str) -> bytes:
    out = bytearray()
    for label in name.split(".") if name else []:
        raw = label.encode("latin-1")
        if not raw or len(raw) > MAX_LABEL:
            raise ValueError(f"name {name!r}: label {label!r} is empty or longer than "
                             f"{MAX_LABEL} bytes")
        out += bytes([len(raw)]) + raw
    return bytes(out) + b"\x00"


def query(name: str, qtype: int = A, query_id: int = 0, recursion: bool = True) -> bytes:
    """A query for ``name``: what a client sends (tests, and anyone probing 15053)."""
    return (_HEADER.pack(query_id, _RD if recursion else 0, 1, 0, 0, 0)
            + encode_name(name.rstrip(".").lower()) + struct.pack("!HH", qtype, CLASS_IN))


def response(query: Query, rcode: int, addresses: Sequence[str] = (),
             limit: int | None = None) -> bytes:
    """The answer to ``query``: ``rcode`` and an A or AAAA record per address (the
    question's name, by a pointer to it), authoritative, recursion available. Past
    ``limit`` bytes (UDP) the records are left out and TC set, so the client asks over TCP.
    """
    records = b""
    for address in addresses:
        raw = ipaddress.ip_address(address).packed
        rtype = A if len(raw) == 4 else AAAA
        records += struct.pack("!HHHIH", 0xC00C, rtype, CLASS_IN, TTL, len(raw)) + raw
    flags = _QR | _AA | _RA | (query.flags & (_RD | 0x7800)) | rcode
    question = query.wire[_HEADER.size:query.question_end]
    count = len(addresses)
    if limit is not None and _HEADER.size + len(question) + len(records) > limit:
        flags, records, count = flags | _TC, b"", 0
    return _HEADER.pack(query.id, flags, 1, count, 0, 0) + question + records


def error(data: bytes, rcode: int = FORMERR) -> bytes | None:
    """An answer carrying only ``rcode`` to whatever ``data`` is (its id, its question
    when it parses); None when not even an id can be read."""
    try:
        parsed = parse_query(data)
    except MalformedQuery as exc:
        if exc.query_id is None:
            return None
        return _HEADER.pack(exc.query_id, _QR | _RA | rcode, 0, 0, 0, 0)
    return response(parsed, rcode)


def nameservers(resolv_conf: str) -> tuple[str, ...]:
    """The ``nameserver`` addresses of a resolv.conf, in order (unreadable ones skipped,
    as the C library skips them)."""
    found = []
    for line in resolv_conf.splitlines():
        words = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(words) >= 2 and words[0] == "nameserver":
            try:
                found.append(str(ipaddress.ip_address(words[1].split("%", 1)[0])))
            except ValueError:
                continue
    return tuple(found)


# -- the mesh's names ------------------------------------------------------------------


def search_path(namespace: str, domain: str) -> tuple[str, ...]:
    """A Kubernetes pod's search domains (ClusterFirst)."""
    return (f"{namespace}.svc.{domain}", f"svc.{domain}", domain)


def _expansions(relative: str, namespace: str, domain: str) -> Iterator[str]:
    labels = relative.split(".")
    if len(labels) == 1:
        yield f"{relative}.{namespace}.svc.{domain}"
    elif len(labels) == 2:
        yield f"{relative}.svc.{domain}"
    elif len(labels) == 3 and labels[2] == "svc":
        yield f"{relative}.{domain}"


def candidates(name: str, namespace: str, domain: str) -> list[str]:
    """The hostnames ``name`` may mean for a pod in ``namespace``, most direct first: the
    name itself, then the Kubernetes forms of it (as sent, or with one search domain the
    client appended taken off)."""
    out = [name]
    shorts = [name] if name.count(".") <= 2 else []
    for suffix in search_path(namespace, domain):
        if name.endswith("." + suffix):
            shorts.append(name[:-len(suffix) - 1])
    for short in shorts:
        out.extend(_expansions(short, namespace, domain))
    return list(dict.fromkeys(out))


def mesh_addresses(state: WorkloadState, name: str, namespace: str,
                   domain: str) -> tuple[str, ...] | None:
    """The addresses of the mesh's service ``name`` means, seen from ``namespace``: its
    VIPs, or (a headless service) its ready workloads' addresses. None when the mesh has no such
    name (forward it)."""
    for hostname in candidates(name, namespace, domain):
        service = state.service_by_host(hostname)
        if service is None:
            continue
        vips = [v for v in service.vips if is_ip(v)]
        if not vips:
            vips = [a for workload, _ in state.endpoints(service) if workload.healthy
                    for a in workload.addresses]
        return tuple(dict.fromkeys(vips))
    return None


@attrs.frozen
class Reply:
    """Send these bytes back."""

    wire: bytes


@attrs.frozen
class Forward:
    """Not a mesh name: send the query, as it came, to the upstream resolvers."""

    query: Query


def decide(state: WorkloadState, data: bytes, namespace: str, domain: str = "cluster.local",
           limit: int | None = None) -> Reply | Forward | None:
    """What ztunnel does with ``data`` from a pod in ``namespace``: answer it (a mesh name,
    or FORMERR / NOTIMP for what it cannot read), forward it, or drop it (None: not even
    an id to answer). ``limit`` is the UDP size limit, None over TCP."""
    try:
        parsed = parse_query(data)
    except MalformedQuery:
        answer = error(data, FORMERR)
        return Reply(answer) if answer is not None else None
    if opcode(parsed) != 0:
        return Reply(response(parsed, NOTIMP))
    question = parsed.question
    if question.qclass != CLASS_IN or question.qtype not in (A, AAAA):
        return Forward(parsed)
    found = mesh_addresses(state, question.name, namespace, domain)
    if found is None:
        return Forward(parsed)
    size = 4 if question.qtype == A else 16
    chosen = [a for a in found if len(ipaddress.ip_address(a).packed) == size]
    # A known name without an address of the asked family: NOERROR and no record, so the
    # client does not go on searching (or ask upstream) for a name the mesh holds.
    return Reply(response(parsed, NOERROR, chosen, limit))


def answer_of(data: bytes) -> tuple[int, int, list[str]]:
    """A response's id, rcode and the addresses of its A/AAAA records (tests and probes
    read answers with it); ``MalformedQuery`` when it does not decode."""
    if len(data) < _HEADER.size:
        raise MalformedQuery(f"{len(data)} bytes: shorter than a DNS header", None)
    response_id, flags, questions, answers, _, _ = _HEADER.unpack_from(data)
    position = _HEADER.size
    for _ in range(questions):
        _, position = _name(data, position, response_id)
        position += 4
    found = []
    for _ in range(answers):
        _, position = _name(data, position, response_id)
        if position + 10 > len(data):
            raise MalformedQuery("a record is cut short", response_id)
        rtype, _, _, size = struct.unpack_from("!HHIH", data, position)
        rdata = data[position + 10:position + 10 + size]
        if len(rdata) < size:
            raise MalformedQuery("a record's data is cut short", response_id)
        if rtype in (A, AAAA) and size in (4, 16):
            found.append(str(ipaddress.ip_address(rdata)))
        position += 10 + size
    return response_id, flags & 0xF, found
