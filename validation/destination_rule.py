"""DestinationRule checks beyond its schema: host syntax, subsets, traffic policies
(load balancer, connection pool, outlier detection, client TLS), exportTo.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pilotfish.core.objects import ConfigObject, FieldPath
from pilotfish.validation import names
from pilotfish.validation.fields import (
    arr,
    check_export_to,
    check_labels,
    check_port,
    check_selector,
    error,
    num,
    obj,
    text,
)
from pilotfish.validation.issues import Issue, invalid, required, warning

_POLICY_FIELDS = ("loadBalancer", "connectionPool", "outlierDetection", "tls",
                  "portLevelSettings", "tunnel", "proxyProtocol", "retryBudget")
_PORT_POLICY_FIELDS = ("loadBalancer", "connectionPool", "outlierDetection", "tls")
# Maglev needs a prime table size below this bound (Envoy's limit).
_MAGLEV_LIMIT = 5000011


def check(spec: dict[str, Any], config: ConfigObject) -> Iterator[Issue]:
    base: FieldPath = ("spec",)
    host = text(spec.get("host"))
    reason = names.wildcard_domain_error(host)
    if reason:
        yield invalid((*base, "host"), host, reason)
    if "trafficPolicy" in spec:
        yield from check_policy((*base, "trafficPolicy"), obj(spec["trafficPolicy"]))
    seen: dict[str, int] = {}
    for index, subset in enumerate(arr(spec.get("subsets"))):
        subset, where = obj(subset), (*base, "subsets", index)
        name = text(subset.get("name"))
        if name in seen:
            yield invalid((*where, "name"), name, f"duplicate subset name (also subset "
                          f"{seen[name]})")
        seen.setdefault(name, index)
        if names.dns_label_error(name):
            yield invalid((*where, "name"), name, "subset name must be a DNS-1123 label")
        labels = obj(subset.get("labels"))
        if not labels:
            yield warning((*where, "labels"), "subset has no labels: it selects every "
                          "endpoint of the host")
        yield from check_labels((*where, "labels"), labels)
        if "trafficPolicy" in subset:
            yield from check_policy((*where, "trafficPolicy"), obj(subset["trafficPolicy"]))
    selector = spec.get("workloadSelector")
    if selector is not None:
        yield from check_selector((*base, "workloadSelector", "matchLabels"),
                                  obj(obj(selector).get("matchLabels")), "DestinationRule")
        exports = {config.namespace if e == "." else e for e in arr(spec.get("exportTo"))}
        if exports and exports != {config.namespace}:
            yield invalid((*base, "exportTo"), spec.get("exportTo"), "a DestinationRule with "
                          "a workloadSelector can only be exported to its own namespace")
    yield from check_export_to((*base, "exportTo"), arr(spec.get("exportTo")),
                               config.namespace, allow_none=False)


def check_policy(path: FieldPath, policy: dict[str, Any], port_level: bool = False) -> (
    Iterator[Issue]
):
    fields = _PORT_POLICY_FIELDS if port_level else _POLICY_FIELDS
    if not any(field in policy for field in fields):
        yield error(path, "a traffic policy must set at least one of " + ", ".join(fields))
        return
    if "tunnel" in policy and "proxyProtocol" in policy:
        yield error(path, "tunnel and proxyProtocol cannot be set together")
    outlier = obj(policy.get("outlierDetection"))
    yield from _check_outlier((*path, "outlierDetection"), outlier)
    if "connectionPool" in policy:
        yield from check_connection_pool((*path, "connectionPool"),
                                         obj(policy["connectionPool"]))
    yield from _check_load_balancer((*path, "loadBalancer"), obj(policy.get("loadBalancer")))
    yield from check_client_tls((*path, "tls"), obj(policy.get("tls")))
    tunnel = obj(policy.get("tunnel"))
    if tunnel:
        target = text(tunnel.get("targetHost"))
        if names.fqdn_error(target) and not names.is_ip(target):
            yield invalid((*path, "tunnel", "targetHost"), target, "must be a DNS name or IP")
        yield from check_port((*path, "tunnel", "targetPort"), tunnel.get("targetPort"))
    ports: dict[int, int] = {}
    for index, setting in enumerate(arr(policy.get("portLevelSettings"))):
        setting, where = obj(setting), (*path, "portLevelSettings", index)
        number = num(obj(setting.get("port")).get("number"))
        if number in ports:
            yield warning((*where, "port"), f"port {number} is already set by entry "
                          f"{ports[number]}; this entry is ignored")
        ports.setdefault(number, index)
        yield from check_policy(where, setting, port_level=True)


def _check_outlier(path: FieldPath, outlier: dict[str, Any]) -> Iterator[Issue]:
    if "consecutiveErrors" in outlier:
        yield warning((*path, "consecutiveErrors"), "consecutiveErrors is deprecated; use "
                      "consecutiveGatewayErrors or consecutive5xxErrors")
    if num(outlier.get("consecutiveLocalOriginFailures")) > 0 and not outlier.get(
            "splitExternalLocalOriginErrors"):
        yield error((*path, "consecutiveLocalOriginFailures"), "needs "
                    "splitExternalLocalOriginErrors: true")
    for field in ("maxEjectionPercent", "minHealthPercent"):
        if field in outlier and not 0 <= num(outlier[field]) <= 100:
            yield invalid((*path, field), outlier[field], "must be in range 0-100")


def check_connection_pool(path: FieldPath, pool: dict[str, Any]) -> Iterator[Issue]:
    if not pool.get("http") and not pool.get("tcp"):
        yield error(path, "a connection pool must set http or tcp")
    http, tcp = obj(pool.get("http")), obj(pool.get("tcp"))
    for part, settings, fields in (
        ("http", http, ("http1MaxPendingRequests", "http2MaxRequests",
                        "maxRequestsPerConnection", "maxRetries", "maxConcurrentStreams")),
        ("tcp", tcp, ("maxConnections",)),
    ):
        for field in fields:
            if num(settings.get(field)) < 0:
                yield invalid((*path, part, field), settings[field], "must not be negative")
    if http.get("h2UpgradePolicy") == "UPGRADE" and http.get("useClientProtocol"):
        yield error((*path, "http"), "useClientProtocol cannot be true when h2UpgradePolicy "
                    "is UPGRADE")


def _check_load_balancer(path: FieldPath, balancer: dict[str, Any]) -> Iterator[Issue]:
    hashing = obj(balancer.get("consistentHash"))
    if "httpCookie" in hashing and not text(obj(hashing["httpCookie"]).get("name")):
        yield required((*path, "consistentHash", "httpCookie", "name"))
    if "minimumRingSize" in hashing:
        yield warning((*path, "consistentHash", "minimumRingSize"), "minimumRingSize is "
                      "deprecated; use ringHash.minimumRingSize")
        if "ringHash" in hashing or "maglev" in hashing:
            yield error((*path, "consistentHash"), "minimumRingSize cannot be combined with "
                        "ringHash or maglev")
    if "maglev" in hashing:
        size = num(obj(hashing["maglev"]).get("tableSize"))
        where = (*path, "consistentHash", "maglev", "tableSize")
        if not 0 < size < _MAGLEV_LIMIT or not _is_prime(size):
            yield invalid(where, size, f"must be a prime number below {_MAGLEV_LIMIT}")
    locality = obj(balancer.get("localityLbSetting"))
    if locality.get("distribute") and locality.get("failover"):
        yield error((*path, "localityLbSetting"), "distribute and failover cannot be set "
                    "together")
    for index, rule in enumerate(arr(locality.get("distribute"))):
        weights = obj(obj(rule).get("to"))
        total = sum(num(weight) for weight in weights.values())
        if weights and total != 100:
            yield invalid((*path, "localityLbSetting", "distribute", index, "to"), total,
                          "weights must add up to 100")
    for index, rule in enumerate(arr(locality.get("failover"))):
        rule = obj(rule)
        if rule.get("from") and rule.get("from") == rule.get("to"):
            yield invalid((*path, "localityLbSetting", "failover", index), rule,
                          "from and to must be different regions")


def _is_prime(number: int) -> bool:
    if number < 2:
        return False
    return all(number % factor for factor in range(2, int(number**0.5) + 1))


def check_client_tls(path: FieldPath, tls: dict[str, Any]) -> Iterator[Issue]:
    """Client-side TLS settings (DestinationRule, Sidecar egress proxies)."""
    mode = tls.get("mode")
    files = [f for f in ("clientCertificate", "privateKey", "caCertificates",
                         "credentialName") if text(tls.get(f))]
    if mode == "ISTIO_MUTUAL":
        for field in files:
            yield error((*path, field), "ISTIO_MUTUAL uses Istio's own certificates; "
                        f"{field} cannot be set")
    elif mode == "MUTUAL" and not text(tls.get("credentialName")):
        for field in ("clientCertificate", "privateKey"):
            if field not in files:
                yield error((*path, field), "MUTUAL TLS without credentialName needs "
                            f"{field}")
