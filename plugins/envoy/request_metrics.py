"""Istio's standard request and TCP metrics from Envoy's gRPC access-log entries. Sans-IO.

Istio's Envoy counts requests in its ``istio.stats`` filter, which stock Envoy lacks.
Stock Envoy can send every request and TCP connection to a gRPC access-log service
(``translators/access_logs.py`` sets that up; ``access_log_service`` serves it).
An entry says what the stats cannot: the peer's certificate, whether the connection was
mutual TLS, the exact response flags. This module folds entries into Istio's families:

- ``istio_requests_total``, ``istio_request_duration_milliseconds`` (time to the last
  byte sent downstream), ``istio_request_bytes`` and ``istio_response_bytes`` (headers and
  body) for HTTP and gRPC;
- ``istio_tcp_connections_opened_total`` (tcp_proxy's entry when the upstream connects),
  ``istio_tcp_connections_closed_total``, ``istio_tcp_received_bytes_total`` and
  ``istio_tcp_sent_bytes_total`` (counted when the connection ends).

Labels are Istio's, in Istio's order. The cluster an entry went to says the reporter and the
destination service (``istio_metrics.series_labels``, with the cluster metadata the caller
looks up). On the destination side the TLS handshake gives ``source_principal`` (the peer's
SPIFFE ID), ``destination_principal`` (our own) and ``connection_security_policy``
(``mutual_tls`` or ``none``); a stream an HBONE tunnel brought over an internal listener
has no handshake of its own, and the tunnel's identities come from the filter state the
terminating listener shared with it (``io.istio.peer_principal`` and
``io.istio.local_principal``, which the loggers ask Envoy to send). On the source side
Envoy's entry has no upstream TLS details: principals stay ``unknown`` and the policy is
``unknown``, as Istio reports it there. The
peer's workload labels need Istio's metadata exchange, which stock Envoy lacks: ``unknown``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import attrs
from google.protobuf import wrappers_pb2

from pilotfish.core.istio_metrics import (
    LOCAL_PRINCIPAL,
    PEER_PRINCIPAL,
    parse_cluster_name,
    reporter_of,
    security_labels,
    spiffe_name,
)
from pilotfish.core.istio_requests import (
    Histogram,
    IstioSeries,
    Key,
)
from pilotfish.core.metric_overrides import (
    NO_OVERRIDES,
    Overrides,
    http_attributes,
)
from pilotfish.core.prometheus import Family, Sample

# Envoy's ResponseFlags fields → the short flags of %RESPONSE_FLAGS%, in Envoy's order.
RESPONSE_FLAGS = (
    ("failed_local_healthcheck", "LH"), ("no_healthy_upstream", "UH"),
    ("upstream_request_timeout", "UT"), ("local_reset", "LR"),
    ("upstream_remote_reset", "UR"), ("upstream_connection_failure", "UF"),
    ("upstream_connection_termination", "UC"), ("upstream_overflow", "UO"),
    ("no_route_found", "NR"), ("delay_injected", "DI"), ("fault_injected", "FI"),
    ("rate_limited", "RL"), ("unauthorized_details", "UAEX"),
    ("rate_limit_service_error", "RLSE"),
    ("downstream_connection_termination", "DC"), ("upstream_retry_limit_exceeded", "URX"),
    ("stream_idle_timeout", "SI"), ("invalid_envoy_request_headers", "IH"),
    ("downstream_protocol_error", "DPE"), ("upstream_max_stream_duration_reached", "UMSDR"),
    ("response_from_cache_filter", "RFCF"), ("no_filter_config_found", "NFCF"),
    ("duration_timeout", "DT"), ("upstream_protocol_error", "UPE"),
    ("no_cluster_found", "NC"), ("overload_manager", "OM"),
    ("dns_resolution_failure", "DF"), ("downstream_remote_reset", "DR"),
)
TCP_CONNECTED, TCP_END = 1, 3  # AccessLogType TcpUpstreamConnected, TcpConnectionEnd

log = logging.getLogger("pilotfish.metrics")




def response_flags(flags: Any) -> str:
    """Envoy's short flags of a ResponseFlags message, comma-separated; ``-`` if none."""
    found = [short for field, short in RESPONSE_FLAGS if (
        flags.HasField(field) if field == "unauthorized_details" else getattr(flags, field))]
    return ",".join(found) or "-"


def _uri_san(certificate: Any) -> str:
    return spiffe_name(san.uri for san in certificate.subject_alt_name if san.uri)


def _attributes(entry: Any) -> dict[str, Any]:
    """Envoy's attributes of an HTTP entry, as Telemetry's expressions name them."""
    request = entry.request
    return http_attributes(_METHODS.get(request.request_method, ""), request.authority,
                           request.path, request.scheme, request.user_agent,
                           request.request_headers, int(entry.response.response_code.value))


_METHODS = {1: "GET", 2: "HEAD", 3: "POST", 4: "PUT", 5: "DELETE", 6: "CONNECT",
            7: "OPTIONS", 8: "TRACE", 9: "PATCH"}


def _certificates(tls: Any) -> tuple[bytes, bytes]:
    return (tls.peer_certificate_properties.SerializeToString(),
            tls.local_certificate_properties.SerializeToString())


def _tunneled(common: Any) -> tuple[bytes, bytes] | None:
    """The tunnel's identities an entry without TLS carries as filter state (each an
    ``Any`` of a ``StringValue``, serialized), or None when it came in plaintext."""
    objects = common.filter_state_objects
    if PEER_PRINCIPAL not in objects:
        return None
    local = objects[LOCAL_PRINCIPAL].value if LOCAL_PRINCIPAL in objects else b""
    return objects[PEER_PRINCIPAL].value, local


def _string_value(raw: bytes) -> str:
    return wrappers_pb2.StringValue.FromString(raw).value


def _grpc_status(headers: Mapping[str, str], trailers: Mapping[str, str]) -> str:
    return trailers.get("grpc-status") or headers.get("grpc-status") or ""


# What one kind of HTTP entry adds to: the istio_requests_total counts and key (None when
# disabled), and the duration, request size and response size histograms (None: disabled).
_HttpSeries = tuple[dict[Key, float], Key | None, Histogram | None, Histogram | None,
                    Histogram | None]
CACHE_LIMIT = 4096  # kinds of entry remembered; past it the caches start over


@attrs.define
class RequestMetrics(IstioSeries):
    """Accumulates entries; `families` renders them with the current cluster metadata.

    Entries of a router or sidecar come in few kinds (cluster, code, flags, peer): the
    labels of each kind are worked out once and remembered with the series they add to,
    so an entry costs reading the fields that tell its kind and its three measures. A
    Telemetry's tag overrides (CEL over each entry's attributes) take the slow path."""

    entries: int = 0
    skipped: int = 0  # entries whose cluster is not one of Istio's (no route, xds-grpc...)
    bad_batches: int = 0  # batches that could not be counted (the server says so)
    # cluster name → reporter, or None when the cluster is not Istio's
    _reporters: dict[str, str | None] = attrs.field(factory=dict, init=False, repr=False)
    _http: dict[tuple[Any, ...], _HttpSeries] = attrs.field(factory=dict, init=False,
                                                            repr=False)
    _flags: dict[bytes, str] = attrs.field(factory=dict, init=False, repr=False)
    _names: dict[bytes, str] = attrs.field(factory=dict, init=False, repr=False)

    # -- recording ------------------------------------------------------------------------

    def record_message(self, message: Any, overrides: Overrides = NO_OVERRIDES) -> None:
        """One StreamAccessLogsMessage: HTTP or TCP entries."""
        if message.HasField("http_logs"):
            record = self.record_http if overrides.tags else self._record_http_kind
            for entry in message.http_logs.log_entry:
                record(entry, overrides)
        elif message.HasField("tcp_logs"):
            for entry in message.tcp_logs.log_entry:
                self.record_tcp(entry, overrides)

    def _reporter(self, cluster: str) -> str | None:
        if cluster not in self._reporters:
            if len(self._reporters) >= CACHE_LIMIT:
                self._reporters.clear()
            ref = parse_cluster_name(cluster)
            self._reporters[cluster] = None if ref is None else reporter_of(ref)
        return self._reporters[cluster]

    def _base(self, common: Any) -> tuple[str, str] | None:
        """(cluster, reporter) of an entry, or None when its cluster is not Istio's."""
        self.entries += 1
        cluster = common.upstream_cluster  # the real name, not the alt_stat_name "name;"
        reporter = self._reporter(cluster)
        if reporter is None:
            self.skipped += 1
            return None
        return cluster, reporter

    def _response_flags(self, common: Any) -> str:
        if not common.HasField("response_flags"):  # Envoy sets it only when a flag is up
            return "-"
        flags = common.response_flags
        raw = flags.SerializeToString(deterministic=True)
        found = self._flags.get(raw)
        if found is None:
            if len(self._flags) >= CACHE_LIMIT:
                self._flags.clear()
            found = self._flags[raw] = response_flags(flags)
        return found

    def _name(self, certificate: Any) -> str:
        raw = certificate.SerializeToString(deterministic=True)
        found = self._names.get(raw)
        if found is None:
            if len(self._names) >= CACHE_LIMIT:
                self._names.clear()
            found = self._names[raw] = _uri_san(certificate)
        return found

    def _security(self, common: Any, reporter: str) -> dict[str, str]:
        """The TLS labels of one entry (see ``istio_metrics.security_labels``)."""
        if reporter != "destination":
            return security_labels(reporter, "", "")
        if not common.HasField("tls_properties"):
            tunneled = _tunneled(common)
            if tunneled is None:
                return security_labels(reporter, "", "")
            peer, local = tunneled
            return security_labels(reporter, _string_value(peer), _string_value(local))
        tls = common.tls_properties
        return security_labels(reporter, self._name(tls.peer_certificate_properties),
                               self._name(tls.local_certificate_properties))

    @staticmethod
    def _certificates_or_tunnel(common: Any) -> tuple[Any, ...] | None:
        """What an inbound entry's security labels depend on: its certificates, else the
        tunnel's identities (told apart, as their bytes could be alike)."""
        if common.HasField("tls_properties"):
            return _certificates(common.tls_properties)
        tunneled = _tunneled(common)
        return None if tunneled is None else ("tunnel", *tunneled)

    def _record_http_kind(self, entry: Any, overrides: Overrides) -> None:
        """`record_http` for overrides without tags: labels remembered per kind of entry."""
        self.entries += 1
        common = entry.common_properties
        cluster = common.upstream_cluster
        reporter = self._reporters.get(cluster, "") or self._reporter(cluster)
        if reporter is None:
            self.skipped += 1
            return
        request, response = entry.request, entry.response
        content_type = request.request_headers.get("content-type")
        # What the labels depend on, read as cheaply as can be: the flags and certificates
        # as bytes (Envoy sets them only when there is something to say; the rest of the
        # TLS properties, a session id among them, differs from one connection to the next).
        kind = (overrides.disabled, cluster, response.response_code.value,
                _grpc_status(response.response_headers, response.response_trailers)
                if content_type and content_type.startswith("application/grpc") else None,
                common.response_flags.SerializeToString()
                if common.HasField("response_flags") else None,
                self._certificates_or_tunnel(common) if reporter == "destination" else None)
        series = self._http.get(kind)
        if series is None:
            series = self._http_series(entry, cluster, reporter, overrides, kind)
        counts, counted, duration, request_bytes, response_bytes = series
        if counted is not None:
            counts[counted] += 1
        if duration is not None:
            finished = common.time_to_last_downstream_tx_byte if common.HasField(
                "time_to_last_downstream_tx_byte") else common.duration
            duration.observe((finished.seconds * 1_000_000_000 + finished.nanos) / 1e6)
        if request_bytes is not None:
            request_bytes.observe(request.request_headers_bytes + request.request_body_bytes)
        if response_bytes is not None:
            response_bytes.observe(response.response_headers_bytes
                                   + response.response_body_bytes)

    def _http_series(self, entry: Any, cluster: str, reporter: str, overrides: Overrides,
                     kind: tuple[Any, ...]) -> _HttpSeries:
        if len(self._http) >= CACHE_LIMIT:
            self._http.clear()
        extras = self._http_extras(entry, reporter)

        def key(family: str) -> Key | None:
            if family in overrides.disabled:
                return None
            return (cluster, overrides.extras(family, extras, {}))

        def histogram(family: str) -> Histogram | None:
            found = key(family)
            return None if found is None else self.histogram(family, found)

        made = (self.counters["istio_requests_total"], key("istio_requests_total"),
                histogram("istio_request_duration_milliseconds"),
                histogram("istio_request_bytes"), histogram("istio_response_bytes"))
        self._http[kind] = made
        return made

    def _http_extras(self, entry: Any, reporter: str) -> dict[str, str]:
        """The labels an HTTP entry tells itself."""
        common = entry.common_properties
        headers = dict(entry.response.response_headers)
        trailers = dict(entry.response.response_trailers)
        content_type = entry.request.request_headers.get("content-type", "")
        grpc = content_type.startswith("application/grpc")
        return {
            "request_protocol": "grpc" if grpc else "http",
            "response_code": str(entry.response.response_code.value),
            "grpc_response_status": _grpc_status(headers, trailers) if grpc else "",
            "response_flags": self._response_flags(common),
            **self._security(common, reporter),
        }

    def record_http(self, entry: Any, overrides: Overrides = NO_OVERRIDES) -> None:
        common = entry.common_properties
        base = self._base(common)
        if base is None:
            return
        cluster, reporter = base
        extras = self._http_extras(entry, reporter)
        attributes = _attributes(entry) if overrides.tags else {}

        def key(family: str) -> Key | None:
            if family in overrides.disabled:
                return None
            return (cluster, overrides.extras(family, extras, attributes))

        counted = key("istio_requests_total")
        if counted is not None:
            self.add("istio_requests_total", counted)
        finished = common.time_to_last_downstream_tx_byte if common.HasField(
            "time_to_last_downstream_tx_byte") else common.duration
        request, response = entry.request, entry.response
        for family, value in (
                ("istio_request_duration_milliseconds", finished.ToNanoseconds() / 1e6),
                ("istio_request_bytes", request.request_headers_bytes
                 + request.request_body_bytes),
                ("istio_response_bytes", response.response_headers_bytes
                 + response.response_body_bytes)):
            observed = key(family)
            if observed is not None:
                self.observe(family, observed, value)

    def record_tcp(self, entry: Any, overrides: Overrides = NO_OVERRIDES) -> None:
        common = entry.common_properties
        base = self._base(common)
        if base is None:
            return
        cluster, reporter = base
        extras = {"request_protocol": "tcp", "response_flags": self._response_flags(common),
                  **self._security(common, reporter)}
        if common.access_log_type == TCP_CONNECTED:
            # Flags are only known at the end; the opened series carries none.
            self._count(overrides, "istio_tcp_connections_opened_total", cluster,
                        {**extras, "response_flags": "-"}, 1)
            return
        properties = entry.connection_properties
        self._count(overrides, "istio_tcp_connections_closed_total", cluster, extras, 1)
        self._count(overrides, "istio_tcp_received_bytes_total", cluster, extras,
                    properties.received_bytes)
        self._count(overrides, "istio_tcp_sent_bytes_total", cluster, extras,
                    properties.sent_bytes)

    def _count(self, overrides: Overrides, family: str, cluster: str,
               extras: dict[str, str], value: float) -> None:
        if family not in overrides.disabled:
            self.add(family, (cluster, overrides.extras(family, extras, {})), value)

    # -- rendering ------------------------------------------------------------------------

    def statistics(self) -> list[Family]:
        """The agent's own counters about the entries it received."""
        name = "pilotfish_agent_access_log_entries_total"
        return [
            Family(name, "counter", "Access-log entries received, by outcome.", (
                Sample(name, (("outcome", "counted"),), str(self.entries - self.skipped)),
                Sample(name, (("outcome", "skipped"),), str(self.skipped)))),
            Family("pilotfish_agent_access_log_bad_batches_total", "counter",
                   "Access-log batches that could not be counted.", (
                       Sample("pilotfish_agent_access_log_bad_batches_total", (),
                              str(self.bad_batches)),)),
        ]

