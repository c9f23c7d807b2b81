"""Gateway servers whose ``credentialName`` gives their proxies no usable certificate, and
certificates that two Gateways on the same proxies both serve.

A gateway proxy gets the Secrets of its own namespace only (``translators/sds.py``): a
server's ``credentialName: NAME`` is the Secret NAME in the namespace the gateway's pods
run in, whatever the Gateway's own namespace. When it is missing, holds no certificate and
key in a layout Istio reads (``core/security/credentials.py``), has expired, or a MUTUAL
server finds no CA for it (``ca.crt`` in the Secret, or a Secret ``NAME-cacert``), the
server's TLS handshakes fail. PASSTHROUGH servers terminate nothing and are left out, and
so are Gateways converted from the Gateway API (their status says what failed).
"""

from __future__ import annotations

import datetime
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence

from cryptography import x509

from pilotfish.analysis.base import Check, Finding, Inputs, IstioMessage, Level, finding
from pilotfish.analysis.gateways import share_workloads, user_gateways
from pilotfish.core.objects import ConfigKey, ConfigObject, FieldPath
from pilotfish.core.push_context import Gateway, GatewayServer
from pilotfish.core.security import credentials

_ANALYZER = "gateway.SecretAnalyzer"
CREDENTIAL_MISSING = Check(
    "PF0120", "GatewayCredentialMissing", Level.ERROR,
    "a Gateway server's credentialName is no Secret in its gateway pods' namespace",
    IstioMessage("IST0101", "ReferencedResourceNotFound", _ANALYZER),
)
DUPLICATE_CERTIFICATE = Check(
    "PF0122", "GatewayDuplicateCertificate", Level.WARNING,
    "two Gateways on the same proxies serve one certificate",
    IstioMessage("IST0138", "GatewayDuplicateCertificate", "gateway.CertificateAnalyzer"),
)
CREDENTIAL_INVALID = Check(
    "PF0121", "GatewayCredentialInvalid", Level.ERROR,
    "a Gateway server's credential holds no usable certificate and key",
    IstioMessage("IST0161", "InvalidGatewayCredential", _ANALYZER),
)

_NOT_TERMINATING = frozenset({"PASSTHROUGH", "AUTO_PASSTHROUGH"})


def _expiry(cert: bytes, now: float) -> str:
    """Why a PEM certificate is not valid at ``now`` ("" when it is)."""
    try:
        first = x509.load_pem_x509_certificates(cert)[0]
    except ValueError:
        return ""  # PEM the proxy accepts, but with fields this parser refuses to date
    at = datetime.datetime.fromtimestamp(now, datetime.UTC)
    if first.not_valid_after_utc < at:
        return f"its certificate expired on {first.not_valid_after_utc:%Y-%m-%d}"
    if first.not_valid_before_utc > at:
        return f"its certificate is not valid before {first.not_valid_before_utc:%Y-%m-%d}"
    return ""


def _problem(secret: ConfigObject, server: GatewayServer, secrets: Mapping[ConfigKey,
             ConfigObject], now: float | None) -> str:
    """What makes a Secret unusable for a server ("" when nothing does)."""
    try:
        found = credentials.credential(secret.body)
    except credentials.CredentialError as error:
        return f"{'.'.join(error.path)}: {error.reason}"
    if found is None or found.cert is None or found.key is None:
        return "it holds no certificate and key (tls.crt and tls.key, or cert and key)"
    if now is not None and (expired := _expiry(found.cert, now)):
        return expired
    if str(server.tls.get("mode") or "").upper() == "MUTUAL" and found.ca is None:
        ca = ConfigKey("Secret", secret.namespace, secret.name + credentials.CA_SUFFIX)
        if ca not in secrets:
            return (f"the server is MUTUAL, and neither the Secret holds a CA (ca.crt or "
                    f"cacert) nor is there a Secret {ca.name}")
    return ""


def _check(inputs: Inputs, gw: Gateway, secrets: Mapping[ConfigKey, ConfigObject]
           ) -> Iterator[Finding]:
    namespaces = sorted({pod.namespace for pod in inputs.selected_pods(gw.selector)})
    if not namespaces:
        return  # no pod: PF0110 says so, and there is no namespace to look in
    for server in gw.servers:
        name = str(server.tls.get("credentialName") or "")
        if not name or str(server.tls.get("mode") or "").upper() in _NOT_TERMINATING:
            continue
        path = ("spec", "servers", server.index, "tls", "credentialName")
        for namespace in namespaces:
            key = ConfigKey("Secret", namespace, name)
            secret = secrets.get(key)
            if secret is None:
                refused = " (it is invalid and was not accepted, see PF0001)" \
                    if key in inputs.rejected else ""
                yield finding(CREDENTIAL_MISSING, gw.obj, path,
                              f"credentialName {name!r}: there is no Secret {namespace}/{name}"
                              f"{refused}, and the gateway's pods run in namespace "
                              f"{namespace} (a gateway gets its own namespace's Secrets "
                              f"only): TLS on port {server.port} fails")
            elif why := _problem(secret, server, secrets, inputs.now):
                yield finding(CREDENTIAL_INVALID, gw.obj, path,
                              f"credentialName {name!r}: Secret {namespace}/{name} cannot "
                              f"serve port {server.port}: {why}")


def certificate(server: GatewayServer) -> tuple[FieldPath, str] | None:
    """Where a terminating server's certificate comes from, and its name: the Secret it
    names, or the certificate and key files (None: it terminates no TLS)."""
    tls = server.tls
    if not tls or str(tls.get("mode") or "").upper() in _NOT_TERMINATING:
        return None
    base: FieldPath = ("spec", "servers", server.index, "tls")
    if tls.get("credentialName"):
        return (*base, "credentialName"), f"Secret {tls['credentialName']}"
    if tls.get("serverCertificate") and tls.get("privateKey"):
        return (*base, "serverCertificate"), \
            f"files {tls['serverCertificate']} and {tls['privateKey']}"
    return None


def _duplicates(inputs: Inputs, gateways: Sequence[Gateway]) -> Iterator[Finding]:
    """Each server whose certificate a server of another Gateway on the same proxies also
    serves: a client that opened an HTTP/2 connection for one host reuses it for any other
    name the certificate covers, and the proxy routes it by the first server's routes, which
    lack the other Gateway's hosts (404)."""
    by_certificate: dict[str, list[GatewayServer]] = defaultdict(list)
    for gw in gateways:
        for server in gw.servers:
            if (found := certificate(server)) is not None:
                by_certificate[found[1]].append(server)
    for name, servers in by_certificate.items():
        for server in servers:
            gw = server.gateway
            others = sorted({f"{theirs.gateway.ref} (servers[{theirs.index}])"
                             for theirs in servers if theirs.gateway is not gw
                             and share_workloads(inputs, gw, theirs.gateway)})
            if others:
                path = certificate(server)
                assert path is not None
                yield finding(DUPLICATE_CERTIFICATE, gw.obj, path[0],
                              f"{name} is also served by Gateway {', '.join(others)} on "
                              "the same gateway proxies: clients reuse an HTTP/2 connection "
                              "for every name a certificate covers, and a request for the "
                              "other Gateway's host on it gets 404. Give each Gateway its own "
                              "certificate, or serve both from one Gateway")


def analyze(inputs: Inputs) -> Iterator[Finding]:
    secrets = {obj.key: obj for obj in inputs.push.objects("Secret") if obj.group == ""}
    gateways = user_gateways(inputs)
    for gw in gateways:
        yield from _check(inputs, gw, secrets)
    yield from _duplicates(inputs, gateways)
