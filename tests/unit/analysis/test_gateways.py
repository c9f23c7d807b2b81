"""Gateway checks and the bindings of VirtualServices to Gateways, on cases Istio's test data
does not hold: namespaced and wildcard server hosts, named target ports, servers of
different kinds on one port, a Gateway API Gateway beside Istio's, references to invalid
or generated Gateways."""

from __future__ import annotations

from pathlib import Path

from pilotfish.analysis.base import Finding, Level
from pilotfish.cli import analyze
from pilotfish.core import meshconfig

GATEWAY_POD = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: ingress, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingress}}
  template:
    metadata: {labels: {istio: ingress}}
    spec:
      containers:
      - name: istio-proxy
        image: proxyv2
        ports: [{name: web, containerPort: 8080}, {name: secure, containerPort: 8443}]
---
apiVersion: v1
kind: Service
metadata: {name: ingress, namespace: istio-system}
spec:
  selector: {istio: ingress}
  ports:
  - {name: http, port: 80, targetPort: web}
  - {name: https, port: 443, targetPort: secure}
"""


def gateway(name: str, servers: str, namespace: str = "istio-system",
            selector: str = "{istio: ingress}") -> str:
    return f"""\
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  selector: {selector}
  servers:
{servers}"""


def http_server(port: int, *hosts: str, name: str = "http") -> str:
    return f"  - port: {{number: {port}, name: {name}, protocol: HTTP}}\n" \
           f"    hosts: [{', '.join(repr(h) for h in hosts)}]\n"


def virtual_service(name: str, namespace: str, hosts: str, gateways: str) -> str:
    return f"""\
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  hosts: {hosts}
  gateways: {gateways}
  http: [{{route: [{{destination: {{host: web.shop.svc.cluster.local}}}}]}}]
"""


def run(tmp_path: Path, config: str) -> list[Finding]:
    (tmp_path / "config.yaml").write_text(config)
    inputs, problems = analyze.load(tmp_path, meshconfig.MeshConfig())
    return [*problems, *analyze.run(inputs)]


def found(findings: list[Finding], *codes: str) -> list[tuple[str, str, str]]:
    return [(f.check.code, str(f.key), f.field) for f in findings if f.check.code in codes]


GATEWAY_CODES = ("PF0110", "PF0111", "PF0112")
BINDING_CODES = ("PF0113", "PF0114", "PF0115", "PF0116")


def test_a_server_port_may_be_a_service_port_or_its_named_target(tmp_path: Path) -> None:
    # 80 and 443 are Service ports; 8080 and 8443 the container ports they name; 9000 none.
    servers = http_server(80, "a.example.com") + http_server(8443, "b.example.com",
                                                             name="http-b") \
        + http_server(9000, "c.example.com", name="http-c")
    result = run(tmp_path, GATEWAY_POD + gateway("public", servers))
    assert found(result, *GATEWAY_CODES) == [
        ("PF0111", "Gateway/istio-system/public", "spec.servers[2].port.number")]
    (finding,) = [f for f in result if f.check.code == "PF0111"]
    assert "port 9000" in finding.message and "Service istio-system/ingress" in finding.message
    assert "80->web" in finding.message and finding.severity is Level.WARNING


def test_a_gateway_whose_service_is_not_in_the_files_is_not_checked_for_ports(
        tmp_path: Path) -> None:
    pods_only = GATEWAY_POD.split("---")[0]
    result = run(tmp_path, pods_only + gateway("public", http_server(9000, "*")))
    assert found(result, *GATEWAY_CODES) == []


def test_a_selector_with_no_pod_and_an_empty_selector(tmp_path: Path) -> None:
    config = GATEWAY_POD + gateway("typo", http_server(80, "*"), selector="{istio: ingres}") \
        + gateway("empty", http_server(80, "*"), selector="{}")
    result = run(tmp_path, config)
    assert found(result, *GATEWAY_CODES) == [
        ("PF0110", "Gateway/istio-system/typo", "spec.selector"),
        ("PF0110", "Gateway/istio-system/empty", "spec.selector")]
    typo, empty = [f for f in result if f.check.code == "PF0110"]
    assert "istio=ingres" in typo.message and "empty" in empty.message


def test_conflicts_are_what_one_proxy_port_cannot_hold(tmp_path: Path) -> None:
    tcp = "  - port: {number: 80, name: tcp, protocol: TCP}\n    hosts: ['*']\n"
    tls = ("  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [%s]\n"
           "    tls: {mode: SIMPLE, credentialName: cert}\n")
    config = GATEWAY_POD \
        + gateway("web-a", http_server(80, "a.example.com") + tls % "'*.example.com'") \
        + gateway("web-b", http_server(80, "a.example.com", name="http-b")
                  + tls % "'b.example.com'") \
        + gateway("web-c", tls % "'c.other.com'") \
        + gateway("raw", tcp, namespace="edge")
    result = run(tmp_path, config)
    conflicts = [(str(f.key), f.message) for f in result if f.check.code == "PF0112"]
    # Plaintext HTTP servers share port 80's routes: no conflict among web-a and web-b there.
    # The TCP server of another namespace (a selector reaches across) takes all of port 80.
    # On 443, b.example.com is under *.example.com; c.other.com is nobody else's.
    by_gateway = sorted({key for key, _ in conflicts})
    assert by_gateway == ["Gateway/edge/raw", "Gateway/istio-system/web-a",
                          "Gateway/istio-system/web-b"]
    assert any("b.example.com goes to the one read first" in m for _, m in conflicts)
    assert any("HTTP and TCP cannot share a port" in m for _, m in conflicts)
    assert not any("web-c" in m for _, m in conflicts)


def test_gateways_on_different_proxies_do_not_conflict(tmp_path: Path) -> None:
    tcp = "  - port: {number: 80, name: tcp, protocol: TCP}\n    hosts: ['*']\n"
    config = GATEWAY_POD + gateway("web", http_server(80, "*")) \
        + gateway("raw", tcp, selector="{istio: egress}")
    assert found(run(tmp_path, config), "PF0112") == []


def test_server_hosts_admit_namespaces_and_wildcards(tmp_path: Path) -> None:
    servers = http_server(80, "./own.example.com", "shop/shop.example.com",
                          "*/any.example.com", "*.wild.example.com")
    config = GATEWAY_POD + gateway("public", servers) + "".join([
        virtual_service("own", "istio-system", "[own.example.com]", "[public]"),
        virtual_service("own-elsewhere", "shop", "[own.example.com]",
                        "[istio-system/public]"),
        virtual_service("shop", "shop", "[shop.example.com]", "[istio-system/public]"),
        virtual_service("shop-elsewhere", "web", "[shop.example.com]",
                        "[istio-system/public]"),
        virtual_service("any", "web", "[any.example.com]", "[istio-system/public]"),
        virtual_service("wild", "web", "[a.wild.example.com]", "[istio-system/public]"),
        virtual_service("wider", "web", "['*.example.com']", "[istio-system/public]"),
        virtual_service("legacy", "web", "[nope.example.com]",
                        "[public.istio-system.svc.cluster.local]"),
    ])
    result = run(tmp_path, config)
    assert found(result, *BINDING_CODES) == [
        ("PF0114", "VirtualService/shop/own-elsewhere", "spec.gateways[0]"),
        ("PF0114", "VirtualService/web/shop-elsewhere", "spec.gateways[0]"),
        ("PF0114", "VirtualService/web/legacy", "spec.gateways[0]"),
    ]
    elsewhere = next(f for f in result if f.key and f.key.name == "shop-elsewhere")
    assert "any.example.com" in elsewhere.message and "from namespace web" in elsewhere.message
    assert "shop.example.com, " not in elsewhere.message.split("admit")[1]


def test_unknown_invalid_and_gateway_api_gateways(tmp_path: Path) -> None:
    config = GATEWAY_POD + """\
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: web}
spec:
  gatewayClassName: istio
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: broken, namespace: web}
spec:
  selector: {istio: ingress}
""" + "".join([
        virtual_service("missing", "web", "[a.example.com]", "[nope]"),
        virtual_service("broken", "web", "[a.example.com]", "[broken]"),
        virtual_service("k8s", "web", "[a.example.com]", "[edge]"),
        virtual_service("generated", "web", "[a.example.com]",
                        "[web/edge-istio-autogenerated-k8s-gateway-http]"),
        virtual_service("both", "web", "[a.example.com]", "[mesh, nope]"),
    ])
    result = run(tmp_path, config)
    assert found(result, *BINDING_CODES) == [
        ("PF0113", "VirtualService/web/missing", "spec.gateways[0]"),
        ("PF0114", "VirtualService/web/broken", "spec.gateways[0]"),
        ("PF0116", "VirtualService/web/k8s", "spec.gateways[0]"),
        ("PF0115", "VirtualService/web/generated", "spec.gateways[0]"),
        ("PF0113", "VirtualService/web/both", "spec.gateways[1]"),
    ]
    broken = next(f for f in result if f.check.code == "PF0114")
    assert "invalid" in broken.message and "PF0001" in broken.message
    k8s = next(f for f in result if f.check.code == "PF0116")
    assert k8s.istio is None and k8s.severity is Level.ERROR
    # The Istio Gateway converted from the Gateway API is not the user's: no PF011x on it.
    assert not [f for f in result if f.check.code in GATEWAY_CODES
                and f.key and "autogenerated" in f.key.name]


def test_a_route_must_be_exported_to_where_the_gateway_pods_run(tmp_path: Path) -> None:
    def exporting(name: str, export: str) -> str:
        return virtual_service(name, "shop", "[a.example.com]", "[istio-system/public]") \
            .replace("  gateways:", f"  exportTo: {export}\n  gateways:")
    config = GATEWAY_POD + gateway("public", http_server(80, "*.example.com")) \
        + exporting("own", "[.]") + exporting("both", "[., istio-system]") \
        + exporting("all", "['*']") \
        + virtual_service("default", "shop", "[a.example.com]", "[istio-system/public]")
    result = run(tmp_path, config)
    assert found(result, "PF0127") == [
        ("PF0127", "VirtualService/shop/own", "spec.exportTo")]
    (hidden,) = [f for f in result if f.check.code == "PF0127"]
    assert "run in namespace istio-system" in hidden.message and hidden.istio is None


def test_short_hosts_are_read_as_discovery_resolves_them(tmp_path: Path) -> None:
    # "web" in namespace shop is web.shop.svc.cluster.local, which the server names.
    config = GATEWAY_POD + gateway("public", http_server(80, "web.shop.svc.cluster.local")) \
        + virtual_service("short", "shop", "[web]", "[istio-system/public]") \
        + virtual_service("elsewhere", "web", "[web]", "[istio-system/public]")
    result = run(tmp_path, config)
    assert found(result, "PF0114") == [
        ("PF0114", "VirtualService/web/elsewhere", "spec.gateways[0]")]
    (other,) = [f for f in result if f.check.code == "PF0114"]
    assert "web.web.svc.cluster.local" in other.message
