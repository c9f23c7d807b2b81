"""pilotfish analyze: each check on a small mesh, the CLI contract, and Istio's inputs."""

from __future__ import annotations

import argparse
import io
import json
import re
import shutil
from pathlib import Path

import pytest

from pilotfish.analysis import CHECKS
from pilotfish.analysis.base import Finding, Level
from pilotfish.cli import analyze
from pilotfish.cli import main as cli
from pilotfish.core import meshconfig

SHOP = """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: admin, port: 9000}
  - {name: metrics, port: 9100, appProtocol: http}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec:
  clusterIP: 10.96.0.20
  selector: {app: db}
  ports: [{port: 3306}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web-v1, namespace: shop}
spec:
  selector: {matchLabels: {app: web, version: v1}}
  template:
    metadata: {labels: {app: web, version: v1}}
    spec:
      containers:
      - name: web
        image: web:1
        securityContext: {runAsGroup: 1337}
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: shop, labels: {app: db}}
spec:
  securityContext: {runAsUser: 1337}
  containers:
  - name: db
    image: mysql:8
    ports: [{containerPort: 3306}]
status: {podIP: 10.1.0.9}
---
apiVersion: v1
kind: Pod
metadata:
  name: batch
  namespace: shop
  annotations: {sidecar.istio.io/inject: "false"}
spec:
  securityContext: {runAsUser: 1337}
  containers: [{name: batch, image: batch:1}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: shop}
spec:
  host: web
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: shop}
spec:
  hosts: [web]
  http:
  - route:
    - destination: {host: web, subset: v1, port: {number: 80}}
      weight: 90
    - destination: {host: web, subset: v3, port: {number: 80}}
      weight: 10
    mirror: {host: web-canary, port: {number: 80}}
  tcp:
  - route: [{destination: {host: db, port: {number: 3307}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: edge, namespace: shop}
spec:
  hosts: [shop.example.com]
  gateways: [istio-system/public]
  http:
  - route: [{destination: {host: web}}]
"""


@pytest.fixture()
def shop(tmp_path: Path) -> Path:
    (tmp_path / "shop.yaml").write_text(SHOP)
    return tmp_path


def findings(root: Path, **mesh: object) -> list[Finding]:
    config = meshconfig.from_dict({"mesh": mesh}) if mesh else meshconfig.MeshConfig()
    inputs, problems = analyze.load(root, config)
    assert not [p for p in problems if p.severity is Level.ERROR], problems
    return analyze.run(inputs)


def summary(found: list[Finding]) -> list[tuple[str, str, str, str]]:
    return [(f.check.code, f.severity.value, str(f.key), f.field) for f in found]


def test_each_check_on_a_small_mesh(shop: Path) -> None:
    assert summary(findings(shop)) == [
        ("PF0101", "info", "Service/shop/web", "spec.ports[1].name"),
        ("PF0101", "info", "Service/shop/db", "spec.ports[0]"),
        ("PF0102", "warning", "Deployment/shop/web-v1",
         "spec.template.spec.containers[0].securityContext.runAsGroup"),
        ("PF0102", "warning", "Pod/shop/db-0", "spec.securityContext.runAsUser"),
        ("PF0103", "warning", "DestinationRule/shop/web", "spec.subsets[1].labels"),
        ("PF0105", "error", "VirtualService/shop/web",
         "spec.http[0].route[1].destination.subset"),
        ("PF0104", "error", "VirtualService/shop/web", "spec.http[0].mirror.host"),
        ("PF0106", "error", "VirtualService/shop/web",
         "spec.tcp[0].route[0].destination.port.number"),
        ("PF0113", "error", "VirtualService/shop/edge", "spec.gateways[0]"),
        ("PF0107", "error", "VirtualService/shop/edge", "spec.http[0].route[0].destination.host"),
        ("PF0118", "warning", "VirtualService/shop/edge",
         "spec.http[0].route[0].destination.host"),
    ]


def test_findings_point_at_the_line_of_the_field(shop: Path) -> None:
    lines = SHOP.splitlines()
    for item in findings(shop):
        assert item.file == str(shop / "shop.yaml")
        text = lines[item.line - 1]
        last = item.field.rsplit(".", 1)[-1].split("[")[0]
        assert last in text or "- {" in text or "- destination" in text, (item, text)


def test_unnamed_port_on_a_server_first_port_is_not_reported_as_sniffed(shop: Path) -> None:
    # db's only port is unnamed, on 3306: it is TCP by the server-first rule, and says so.
    (db,) = [f for f in findings(shop) if f.check.code == "PF0101" and f.key
             and f.key.name == "db"]
    assert "server-first" in db.message and "treated as TCP" in db.message
    (web,) = [f for f in findings(shop) if f.check.code == "PF0101" and f.key
              and f.key.name == "web"]
    assert "detected per connection" in web.message


def test_route_without_port_from_sidecars_is_an_error_as_in_istio(shop: Path) -> None:
    # Istio's IST0112 is an error wherever the route applies; it was info here.
    (shop / "shop.yaml").write_text(SHOP.replace("gateways: [istio-system/public]", ""))
    (edge,) = [f for f in findings(shop) if f.check.code == "PF0107"]
    assert edge.severity is Level.ERROR and edge.istio is not None
    assert edge.istio.code == "IST0112"
    assert "the port the client called is used" in edge.message


def test_subset_check_counts_workload_entries(shop: Path) -> None:
    (shop / "we.yaml").write_text("""\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: web-vm, namespace: shop}
spec: {address: 10.2.0.1, labels: {app: web, version: v2}}
""")
    assert "PF0103" not in {f.check.code for f in findings(shop)}


def test_a_subset_is_checked_even_when_its_host_is_unknown(shop: Path) -> None:
    # As Istio's VirtualService DestinationRule analyzer: the subset is its own mistake.
    (shop / "shop.yaml").write_text(SHOP.replace(
        "mirror: {host: web-canary, port: {number: 80}}",
        "mirror: {host: web-canary, subset: v1, port: {number: 80}}"))
    mirror = [(f.check.code, f.field) for f in findings(shop) if ".mirror." in f.field]
    assert mirror == [("PF0104", "spec.http[0].mirror.host"),
                      ("PF0105", "spec.http[0].mirror.subset")]


def test_nodes_in_the_files_give_pods_their_locality(shop: Path) -> None:
    (shop / "node.yaml").write_text("""\
apiVersion: v1
kind: Node
metadata:
  name: node-a
  labels: {topology.kubernetes.io/zone: zone-a}
---
apiVersion: v1
kind: Pod
metadata: {name: web-2, namespace: shop, labels: {app: web, version: v2}}
spec: {nodeName: node-a, containers: [{name: web, image: web:2}]}
""")
    (shop / "shop.yaml").write_text(SHOP.replace(
        "{name: v2, labels: {version: v2}}",
        "{name: v2, labels: {version: v2, topology.kubernetes.io/zone: zone-a}}"))
    inputs, problems = analyze.load(shop, meshconfig.MeshConfig())
    assert not [p for p in problems if p.key and p.key.kind == "Node"]  # a kind it reads
    assert inputs.nodes == {"node-a": {"topology.kubernetes.io/zone": "zone-a"}}
    assert "PF0103" not in {f.check.code for f in analyze.run(inputs)}


def test_reference_to_an_invalid_service_says_so(shop: Path) -> None:
    (shop / "bad.yaml").write_text("""\
apiVersion: v1
kind: Service
metadata: {name: web-canary, namespace: shop}
spec:
  ports: [{name: http, port: 80, protocol: HTTP}]
""")
    config = meshconfig.MeshConfig()
    inputs, problems = analyze.load(shop, config)
    assert [p.check.code for p in problems] == ["PF0001"]
    (mirror,) = [f for f in analyze.run(inputs) if f.field == "spec.http[0].mirror.host"]
    assert "its Service is invalid" in mirror.message


def test_catalog_codes_are_unique_and_stable() -> None:
    assert len({c.code for c in CHECKS}) == len(CHECKS)
    assert [c.code for c in CHECKS] == [
        "PF0001", "PF0101", "PF0102", "PF0103", "PF0109", "PF0104", "PF0105", "PF0106",
        "PF0107", "PF0108", "PF0110", "PF0111", "PF0112", "PF0113", "PF0114", "PF0115",
        "PF0116", "PF0117", "PF0118", "PF0119", "PF0120", "PF0121",
        "PF0122", "PF0123", "PF0124", "PF0125", "PF0126", "PF0127",
        "PF0128", "PF0129", "PF0130", "PF0131"]


def test_every_check_carries_istios_code_for_the_same_problem() -> None:
    # Codes from Istio's pkg/config/analysis/msg/messages.yaml.
    assert {c.code: (c.istio.code, c.istio.name) for c in CHECKS if c.istio} == {
        "PF0001": ("IST0106", "SchemaValidationError"),
        "PF0101": ("IST0118", "PortNameIsNotUnderNamingConvention"),
        "PF0102": ("IST0144", "InvalidApplicationUID"),
        "PF0103": ("IST0173", "DestinationRuleSubsetNotSelectPods"),
        "PF0109": ("IST0174", "UnknownDestinationRuleHost"),
        "PF0104": ("IST0101", "ReferencedResourceNotFound"),
        "PF0105": ("IST0101", "ReferencedResourceNotFound"),
        "PF0106": ("IST0101", "ReferencedResourceNotFound"),
        "PF0107": ("IST0112", "VirtualServiceDestinationPortSelectorRequired"),
        "PF0108": ("IST0143", "LocalhostListener"),
        "PF0110": ("IST0101", "ReferencedResourceNotFound"),
        "PF0111": ("IST0162", "GatewayPortNotDefinedOnService"),
        "PF0112": ("IST0145", "ConflictingGateways"),
        "PF0113": ("IST0101", "ReferencedResourceNotFound"),
        "PF0114": ("IST0132", "VirtualServiceHostNotFoundInGateway"),
        "PF0115": ("IST0165", "ReferencedInternalGateway"),
        "PF0117": ("IST0109", "ConflictingMeshGatewayVirtualServiceHosts"),
        "PF0118": ("IST0140", "IngressRouteRulesNotAffected"),
        "PF0120": ("IST0101", "ReferencedResourceNotFound"),
        "PF0121": ("IST0161", "InvalidGatewayCredential"),
        "PF0122": ("IST0138", "GatewayDuplicateCertificate"),
        "PF0123": ("IST0127", "NoMatchingWorkloadsFound"),
        "PF0124": ("IST0101", "ReferencedResourceNotFound"),
        "PF0125": ("IST0130", "VirtualServiceUnreachableRule"),
        "PF0126": ("IST0131", "VirtualServiceIneffectiveMatch"),
        "PF0128": ("IST0101", "ReferencedResourceNotFound"),
        "PF0129": ("IST0110", "ConflictingSidecarWorkloadSelectors"),
        "PF0130": ("IST0111", "MultipleSidecarsWithoutWorkloadSelectors"),
        "PF0131": ("IST0167", "IneffectivePolicy"),
    }


def test_a_validation_warning_is_istios_schema_warning(tmp_path: Path) -> None:
    (tmp_path / "vs.yaml").write_text("""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: delegate, namespace: shop}
spec:
  http: [{route: [{destination: {host: web}}]}]
""")
    _, problems = analyze.load(tmp_path, meshconfig.MeshConfig())
    (warning,) = [p for p in problems if p.severity is Level.WARNING]
    assert warning.istio is not None and warning.istio.code == "IST0133"
    assert " warning PF0001 [IST0133] VirtualService shop/delegate: " in str(warning)


# -- the command -------------------------------------------------------------------------


def run_cli(*argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="pilotfish analyze")
    analyze.add_arguments(parser)
    args = parser.parse_args(argv)
    out, err = io.StringIO(), io.StringIO()
    code = analyze.main(args, out, err)
    return code, out.getvalue(), err.getvalue()


def test_cli_text_output_and_exit_status(shop: Path) -> None:
    code, out, err = run_cli("--config-dir", str(shop))
    assert code == 1  # error-level findings
    first = out.splitlines()[0]
    assert first.startswith(f"{shop / 'shop.yaml'}:") and " info PF0101 [IST0118] Service " \
        "shop/web: spec.ports[1].name: port name 'admin'" in first
    assert "5 errors, 4 warnings, 2 info" in err


def test_cli_json_output(shop: Path) -> None:
    code, out, _ = run_cli("--config-dir", str(shop), "-o", "json")
    data = json.loads(out)
    assert code == 1
    assert data[0] == {
        "code": "PF0101", "name": "PortProtocolUndeclared", "istio_code": "IST0118",
        "istio_name": "PortNameIsNotUnderNamingConvention", "level": "info",
        "file": str(shop / "shop.yaml"), "line": 9, "kind": "Service", "namespace": "shop",
        "object": "web", "field": "spec.ports[1].name", "message": data[0]["message"],
    }


def test_cli_exit_zero_without_errors(tmp_path: Path) -> None:
    (tmp_path / "ok.yaml").write_text(SHOP.split("---")[0])
    code, out, _ = run_cli("--config-dir", str(tmp_path))
    assert code == 0 and "PF0101" in out  # info findings do not fail the run


def test_cli_listeners_file(shop: Path, tmp_path: Path) -> None:
    listeners = tmp_path / "listeners.json"
    listeners.write_text(json.dumps([{"pod": "shop/db-0", "listeners": ["127.0.0.1:3306"]}]))
    _, out, _ = run_cli("--config-dir", str(shop), "--listeners", str(listeners))
    assert "PF0108 [IST0143] Pod shop/db-0: spec.containers[0].ports[0].containerPort:" in out
    listeners.write_text("[{")
    with pytest.raises(analyze.CommandError, match=r"listeners.json:1: invalid JSON"):
        run_cli("--config-dir", str(shop), "--listeners", str(listeners))


def test_cli_is_wired_with_help() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["analyze"])
    assert args.func is analyze.main and args.config_dir == "." and args.output == "text"
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert "--listeners" in sub.choices["analyze"].format_help()


def test_cli_missing_directory_is_a_usage_error(tmp_path: Path) -> None:
    assert cli.main(["analyze", "--config-dir", str(tmp_path / "nope")]) == 2


# -- Istio's analyzer inputs (corpus) ----------------------------------------------------


def corpus_findings(corpus: Path, tmp_path: Path, *names: str) -> list[Finding]:
    """Analyze corpus files together, copied into a temporary directory: analyze reads a
    config tree as discovery does, which follows no link out of the tree."""
    for name in names:
        shutil.copyfile(corpus / "analyzers" / name, tmp_path / name)
    inputs, problems = analyze.load(tmp_path, meshconfig.MeshConfig())
    return analyze.sort([*problems, *analyze.run(inputs)])


def codes(found: list[Finding], code: str) -> list[str]:
    return [f"{f.key.name if f.key else ''}:{f.field}" for f in found if f.check.code == code]


@pytest.mark.corpus
def test_corpus_port_names(corpus: Path, tmp_path: Path) -> None:
    found = corpus_findings(corpus, tmp_path, "service-port-name.yaml",
                            "service-no-port-name.yaml",
                            "service-no-port-name-system-namespace.yaml",
                            "incorrect-port-name-external-name-service-type.yaml",
                            "correct-port-name-external-name-service-type.yaml")
    # Managed gateway/waypoint services, system namespaces and ExternalName services (no
    # listener of their own) are left alone; a Service with several unnamed ports is invalid
    # in Kubernetes, hence PF0001 rather than PF0101.
    assert codes(found, "PF0101") == ["my-service2:spec.ports[0].name"]
    assert set(codes(found, "PF0001")) == {
        "my-service1:spec.ports[0].name", "my-service1:spec.ports[1].name"}


@pytest.mark.corpus
def test_corpus_proxy_uid(corpus: Path, tmp_path: Path) -> None:
    found = corpus_findings(corpus, tmp_path, "pod-sec-uid.yaml", "pod-con-sec-uid.yaml",
                            "deployment-pod-sec-uid.yaml", "deployment-con-sec-uid.yaml")
    assert codes(found, "PF0102") == [
        "deploy-con-sec-uid:spec.template.spec.securityContext.runAsUser",
        "deploy-con-sec-uid:spec.template.spec.containers[0].securityContext.runAsUser",
        "deploy-pod-sec-uid:spec.template.spec.securityContext.runAsUser",
        "con-sec-uid:spec.containers[0].securityContext.runAsUser",
        "pod-sec-uid:spec.securityContext.runAsUser",
    ]


@pytest.mark.corpus
def test_corpus_subset_selects_no_pods(corpus: Path, tmp_path: Path) -> None:
    found = corpus_findings(corpus, tmp_path, "destinationrule-subsets-not-select-pods.yaml")
    assert codes(found, "PF0103") == ["subsets-not-select-pods:spec.subsets[0].labels"]


@pytest.mark.corpus
def test_corpus_virtual_service_destinations(corpus: Path, tmp_path: Path) -> None:
    found = corpus_findings(corpus, tmp_path, "virtualservice_destinationhosts.yaml")
    hosts = codes(found, "PF0104")
    assert hosts == [
        "reviews-bookinfo-other:spec.http[0].route[0].destination.host",
        "reviews-mirror-bogushost:spec.http[0].mirror.host",
        # reviews-2port declares ports with protocol HTTP, which Kubernetes refuses.
        "reviews-2port-missing:spec.http[0].route[0].destination.host",
        "reviews-2port-present:spec.http[0].route[0].destination.host",
        "cross-namespace-details:spec.http[0].route[0].destination.host",
        "hello-export-to-bogus:spec.http[0].route[0].destination.host",
    ]
    assert codes(found, "PF0106") == [
        "reviews-bogusport:spec.http[0].route[0].destination.port.number"]
    # The good cases stay quiet: FQDN, ServiceEntry hosts (wildcard too), exported hosts.
    quiet = {"reviews-fqdn", "reviews-external", "reviews-bookinfo-eu",
             "reviews-bookinfo-eu-wildcard", "cross-namespace", "banana-details", "hello",
             "vs-to-extporto-serviceentry"}
    assert not [f for f in found if f.check.code in ("PF0104", "PF0106", "PF0107")
                and f.key is not None and f.key.name in quiet]


@pytest.mark.corpus
def test_corpus_virtual_service_subsets(corpus: Path, tmp_path: Path) -> None:
    # The DestinationRule file has no Service for reviews; the hosts file defines it.
    found = corpus_findings(corpus, tmp_path, "virtualservice_destinationrules.yaml",
                            "virtualservice_destinationhosts.yaml")
    mine = [f for f in found if f.file.endswith("virtualservice_destinationrules.yaml")]
    assert codes(mine, "PF0105") == [
        "reviews-bogussubset:spec.http[0].route[0].destination.subset",
        "reviews-mirror-bogussubset:spec.http[0].mirror.subset",
    ]


@pytest.mark.corpus
def test_corpus_virtual_services_naming_a_gateway_api_gateway(corpus: Path,
                                                             tmp_path: Path) -> None:
    # Istio binds these to the Gateway API Gateway's listeners; pilotfish binds
    # VirtualServices to Istio Gateways only, and says so rather than host mismatches.
    found = corpus_findings(corpus, tmp_path, "virtualservice_kubernetes_gateways.yaml")
    assert codes(found, "PF0116") == ["my-vs:spec.gateways[0]",
                                      "my-vs-host-mismatch:spec.gateways[0]"]
    assert not codes(found, "PF0113") and not codes(found, "PF0114")


def test_the_example_in_the_docs_is_what_analyze_prints(
    shop: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = (Path(__file__).resolve().parents[3] / "docs" / "analyze.md").read_text()
    shown = [line for line in docs.splitlines() if line.startswith("shop.yaml:")]
    monkeypatch.chdir(shop)
    _, out, _ = run_cli("--config-dir", ".")
    assert shown and set(shown) <= set(out.splitlines())
    (example,) = re.findall(r"```json\n(\{.*?\})\n```", docs, re.S)
    _, out, _ = run_cli("--config-dir", ".", "-o", "json")
    assert json.loads(example) in json.loads(out)


# -- Istio's analyzer tests, message for message (corpus) -----------------------------------

# What Istio's analyzers report on their test data: istio/istio
# pkg/config/analysis/analyzers/analyzers_test.go (testGrid), the cases whose analyzer
# pilotfish has checks for. Per case: the analyzer, the input files (in the corpus) and the
# messages expected, (code, "Kind [namespace/]name") as that file writes them (an object
# without a namespace in the YAML lands in "default").
ISTIO_CASES: tuple[tuple[str, tuple[str, ...], tuple[tuple[str, str], ...]], ...] = (
    ("service.PortNameAnalyzer", ("service-no-port-name.yaml",), (
        ("IST0118", "Service my-namespace1/my-service1"),
        ("IST0118", "Service my-namespace1/my-service1"),
        ("IST0118", "Service my-namespace2/my-service2"))),
    ("service.PortNameAnalyzer", ("service-port-name.yaml",), ()),
    ("service.PortNameAnalyzer", ("service-no-port-name-system-namespace.yaml",), ()),
    ("service.PortNameAnalyzer", ("incorrect-port-name-external-name-service-type.yaml",), (
        ("IST0150", "Service nginx-ns/nginx"), ("IST0150", "Service nginx-ns2/nginx-svc2"),
        ("IST0150", "Service nginx-ns3/nginx-svc3"))),
    ("service.PortNameAnalyzer", ("correct-port-name-external-name-service-type.yaml",), ()),
    ("applicationUID.Analyzer", ("pod-sec-uid.yaml",), (("IST0144", "Pod pod-sec-uid"),)),
    ("applicationUID.Analyzer", ("pod-con-sec-uid.yaml",), (("IST0144", "Pod con-sec-uid"),)),
    ("applicationUID.Analyzer", ("deployment-pod-sec-uid.yaml",), (
        ("IST0144", "Deployment deploy-pod-sec-uid"),)),
    ("applicationUID.Analyzer", ("deployment-con-sec-uid.yaml",), (
        ("IST0144", "Deployment deploy-con-sec-uid"),)),
    ("destinationrule.SubsetSelectPodAnalyzer", ("destinationrule-with-fake-host.yaml",), (
        ("IST0174", "DestinationRule default/fake-host"),)),
    ("destinationrule.SubsetSelectPodAnalyzer", ("destinationrule-subsets-not-select-pods.yaml",),
     (("IST0173", "DestinationRule default/subsets-not-select-pods"),)),
    ("destinationrule.SubsetSelectPodAnalyzer",
     ("destinationrule-subsets-with-topology-labels.yaml",), ()),
    ("destinationrule.SubsetSelectPodAnalyzer", ("destinationrule-empty-topology-labels.yaml",), (
        ("IST0173", "DestinationRule default/empty-topology-labels"),)),
    ("virtualservice.DestinationHostAnalyzer", ("virtualservice_destinationhosts.yaml",), (
        ("IST0101", "VirtualService default/reviews-bogushost"),
        ("IST0101", "VirtualService default/reviews-bogushost"),
        ("IST0101", "VirtualService default/reviews-bookinfo-other"),
        ("IST0101", "VirtualService default/reviews-mirror-bogushost"),
        ("IST0101", "VirtualService default/reviews-bogusport"),
        ("IST0112", "VirtualService default/reviews-2port-missing"),
        ("IST0101", "VirtualService istio-system/cross-namespace-details"),
        ("IST0101", "VirtualService hello/hello-export-to-bogus"))),
    ("virtualservice.DestinationHostAnalyzer",
     ("virtualservice_route_rule_no_effects_ingress.yaml",), (
         ("IST0140", "VirtualService default/testing-service-01-test-01"),)),
    ("virtualservice.DestinationRuleAnalyzer", ("virtualservice_destinationrules.yaml",), (
        ("IST0101", "VirtualService default/reviews-bogussubset"),
        ("IST0101", "VirtualService default/reviews-mirror-bogussubset"))),
    ("gateway.IngressGatewayPortAnalyzer", ("gateway-no-workload.yaml",), (
        ("IST0101", "Gateway httpbin-gateway"),)),
    ("gateway.IngressGatewayPortAnalyzer", ("gateway-no-port.yaml",), (
        ("IST0162", "Gateway httpbin-gateway"),)),
    ("gateway.IngressGatewayPortAnalyzer", ("gateway-correct-port.yaml",), ()),
    ("gateway.IngressGatewayPortAnalyzer", ("gateway-custom-ingressgateway.yaml",), ()),
    ("gateway.IngressGatewayPortAnalyzer", ("gateway-custom-ingressgateway-badport.yaml",), (
        ("IST0162", "Gateway httpbin-gateway"),)),
    ("gateway.IngressGatewayPortAnalyzer",
     ("gateway-custom-ingressgateway-badport-notarget.yaml",), (
         ("IST0162", "Gateway httpbin-gateway"),)),
    ("gateway.IngressGatewayPortAnalyzer",
     ("gateway-custom-ingressgateway-translation.yaml",), ()),
    ("gateway.IngressGatewayPortAnalyzer",
     ("gateway-custom-ingressgateway-svcselector.yaml",), (
         ("IST0162", "Gateway httpbin8002-gateway"),)),
    ("gateway.ConflictingGatewayAnalyzer", ("conflicting-gateways.yaml",), (
        ("IST0145", "Gateway alpha"), ("IST0145", "Gateway beta"))),
    ("gateway.ConflictingGatewayAnalyzer", ("gateway-different-port.yaml",), ()),
    ("gateway.ConflictingGatewayAnalyzer", ("conflicting-gateways-multiple-ports.yaml",), (
        ("IST0145", "Gateway alpha"), ("IST0145", "Gateway beta"))),
    ("gateway.ConflictingGatewayAnalyzer", ("conflicting-gateways-subSelector.yaml",), (
        ("IST0145", "Gateway alpha"), ("IST0145", "Gateway beta"))),
    ("gateway.ConflictingGatewayAnalyzer", ("conflicting-gateways-invalid-port.yaml",), ()),
    ("gateway.ConflictingGatewayAnalyzer", ("analyze-list-type.yaml",), (
        ("IST0145", "Gateway alpha"), ("IST0145", "Gateway alpha-l"),
        ("IST0145", "Gateway beta-l"))),
    ("virtualservice.GatewayAnalyzer", ("virtualservice_gateways.yaml",), (
        ("IST0101", "VirtualService httpbin-bogus"),
        ("IST0132", "VirtualService default/cross-test"),
        ("IST0132", "VirtualService httpbin-bogus"),
        ("IST0132", "VirtualService httpbin"))),
    ("virtualservice.GatewayAnalyzer", ("virtualservice_internal_gateway_ref.yaml",), (
        ("IST0165", "VirtualService httpbin"),)),
    ("virtualservice.GatewayAnalyzer", ("virtualservice_host_not_found_gateway.yaml",), (
        ("IST0132", "VirtualService default/testing-service-02-test-01"),
        ("IST0132", "VirtualService default/testing-service-02-test-02"),
        ("IST0132", "VirtualService default/testing-service-02-test-03"),
        ("IST0132", "VirtualService default/testing-service-03-test-04"))),
    ("virtualservice.GatewayAnalyzer", ("virtualservice_host_not_found_gateway_beta.yaml",), (
        ("IST0132", "VirtualService default/testing-service-02-test-01"),
        ("IST0132", "VirtualService default/testing-service-02-test-02"),
        ("IST0132", "VirtualService default/testing-service-02-test-03"),
        ("IST0132", "VirtualService default/testing-service-03-test-04"))),
    ("virtualservice.GatewayAnalyzer",
     ("virtualservice_host_not_found_gateway_with_ns_prefix.yaml",), (
         ("IST0132", "VirtualService default/testing-service-01-test-01"),)),
    ("virtualservice.GatewayAnalyzer",
     ("virtualservice_host_not_found_gateway_with_ns_prefix_beta.yaml",), (
         ("IST0132", "VirtualService default/testing-service-01-test-01"),)),
    ("virtualservice.ConflictingMeshGatewayHostsAnalyzer",
     ("virtualservice_conflictingmeshgatewayhosts.yaml",), (
         ("IST0109", "VirtualService team3/ratings"),
         ("IST0109", "VirtualService team4/ratings"),
         ("IST0109", "VirtualService foo/ratings"),
         ("IST0109", "VirtualService bar/ratings"),
         ("IST0109", "VirtualService foo/productpage"),
         ("IST0109", "VirtualService foo/bogus-productpage"),
         ("IST0109", "VirtualService team2/ratings"))),
    ("virtualservice.ConflictingMeshGatewayHostsAnalyzer",
     ("virtualservice_conflictingmeshgatewayhosts_with_exportto.yaml",), (
         ("IST0109", "VirtualService foo/productpage"),
         ("IST0109", "VirtualService bar/productpage"),
         ("IST0109", "VirtualService foo/productpage-c"),
         ("IST0109", "VirtualService bar/productpage-c"),
         ("IST0109", "VirtualService foo/productpage-d"),
         ("IST0109", "VirtualService bar/productpage-d"))),
    ("virtualservice.JWTClaimRouteAnalyzer", ("virtualservice_jwtclaimroute.yaml",), (
        ("IST0149", "VirtualService foo"),)),
    ("gateway.SecretAnalyzer", ("gateway-secrets.yaml",), (
        ("IST0101", "Gateway defaultgateway-bogusCredentialName"),
        ("IST0101", "Gateway customgateway-wrongnamespace"),
        ("IST0101", "Gateway bogusgateway"))),
    ("gateway.SecretAnalyzer", ("gateway-secrets-validation.yaml",), (
        ("IST0161", "Gateway defaultgateway-invalid-keys"),
        ("IST0161", "Gateway defaultgateway-missing-keys"),
        ("IST0161", "Gateway defaultgateway-invalid-cert"),
        ("IST0161", "Gateway defaultgateway-expired"))),
    ("authz.AuthorizationPoliciesAnalyzer", ("authorizationpolicies.yaml",), (
        ("IST0127", "AuthorizationPolicy istio-system/meshwide-httpbin-v1"),
        ("IST0127", "AuthorizationPolicy httpbin-empty/httpbin-empty-namespace-wide"),
        ("IST0127", "AuthorizationPolicy httpbin/httpbin-nopods"),
        ("IST0101", "AuthorizationPolicy httpbin/httpbin-bogus-ns"),
        ("IST0101", "AuthorizationPolicy httpbin/httpbin-bogus-ns"),
        ("IST0101", "AuthorizationPolicy httpbin/httpbin-bogus-not-ns"),
        ("IST0101", "AuthorizationPolicy httpbin/httpbin-bogus-not-ns"),
        ("IST0127", "AuthorizationPolicy test-ambient/no-workload"))),
    ("schema.ValidationAnalyzer.VirtualService",
     ("virtualservice_dupmatches.yaml", "virtualservice_overlappingmatches.yaml"), (
         ("IST0130", "VirtualService duplicate-match"),
         ("IST0130", "VirtualService foo/sample-foo-cluster01"),
         ("IST0131", "VirtualService almost-duplicate-match"),
         ("IST0131", "VirtualService duplicate-match"),
         ("IST0130", "VirtualService duplicate-tcp-match"),
         ("IST0130", "VirtualService duplicate-empty-tcp"),
         ("IST0131", "VirtualService almost-duplicate-tcp-match"),
         ("IST0131", "VirtualService duplicate-tcp-match"),
         ("IST0130", "VirtualService none/tls-routing"),
         ("IST0131", "VirtualService none/tls-routing-almostmatch"),
         ("IST0131", "VirtualService none/tls-routing"),
         ("IST0131", "VirtualService non-method-get"),
         ("IST0131", "VirtualService overlapping-in-single-match"),
         ("IST0131", "VirtualService overlapping-in-two-matches"),
         ("IST0131", "VirtualService overlapping-mathes-with-different-methods"))),
    ("sidecar.SelectorAnalyzer", ("sidecar-default-selector.yaml",), (
        ("IST0111", "Sidecar ns2/has-conflict-2"),
        ("IST0111", "Sidecar ns2/has-conflict-1"),
        ("IST0167", "Sidecar ns-ambient/namespace-scoped"),
        ("IST0167", "Sidecar ns-ambient/pod-scoped"))),
    ("sidecar.SelectorAnalyzer", ("sidecar-selector.yaml",), (
        ("IST0101", "Sidecar default/maps-to-nonexistent"),
        ("IST0101", "Sidecar other/maps-to-different-ns"),
        ("IST0110", "Sidecar default/dupe-1"),
        ("IST0110", "Sidecar default/dupe-2"),
        ("IST0110", "Sidecar default/overlap-1"),
        ("IST0110", "Sidecar default/overlap-2"))),
    ("gateway.CertificateAnalyzer", ("gateway-duplicate-certificate.yaml",), (
        ("IST0138", "Gateway istio-system/gateway-01-test-01"),
        ("IST0138", "Gateway istio-system/gateway-02-test-01"),
        ("IST0138", "Gateway istio-system/gateway-01-test-02"),
        ("IST0138", "Gateway default/gateway-01-test-03"))),
)

# What Istio's test harness adds to every case (AddDefaultResources in its local analyzer):
# the default ingress gateway's pod and Service in istio-system, which the Gateway cases
# select with ``istio: ingressgateway``. Written beside each case's files.
ISTIO_DEFAULTS = """\
apiVersion: v1
kind: Pod
metadata:
  name: istio-ingressgateway-dummypod
  namespace: istio-system
  labels: {istio: ingressgateway}
spec:
  containers: [{name: istio-proxy, image: proxyv2}]
---
apiVersion: v1
kind: Service
metadata: {name: istio-ingressgateway, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  ports:
  - {name: http2, port: 80, targetPort: 80}
  - {name: https, port: 443, targetPort: 443}
  - {name: tcp, port: 31400, targetPort: 31400}
  - {name: tls, port: 15443, targetPort: 15443}
"""

# Messages of those analyzers that pilotfish does not give, and why.
NOT_GIVEN = {
    "IST0150": "ExternalNameServiceTypeInvalidPortName: pilotfish gives an ExternalName "
               "service no listener or cluster of its own, so its port names change nothing",
    "IST0149": "JwtClaimBasedRoutingWithoutRequestAuthN: pilotfish does not route on JWT "
               "claims at all (such match entries are left out of the routes), so no "
               "RequestAuthentication would make the route work; PF0119 reports every claim "
               "match instead",
}

# Single messages pilotfish does not give although it gives their code, and why.
NOT_GIVEN_FOR = {
    ("IST0132", "VirtualService default/httpbin-bogus"):
        "Istio also reports the hosts of a Gateway that does not exist as not found in it; "
        "pilotfish reports the missing Gateway (PF0113, IST0101) only",
    ("IST0130", "VirtualService foo/sample-foo-cluster01"):
        "an HTTP rule after one without match: pilotfish's validation warns about it "
        "already (PF0001, as Istio's IST0133 SchemaWarning), and analyze does not repeat it",
}

# Inputs that Kubernetes or Istio would refuse, which Istio's tests feed unvalidated and
# pilotfish reports as invalid (PF0001) and leaves out: each repaired, as little as keeps
# what its case tests, before the comparison (test_corpus_refused_inputs_are_reported checks
# the originals). (file, text, replacement, why)
REPAIRS: tuple[tuple[str, str, str, str], ...] = (
    ("service-no-port-name.yaml",
     "      targetPort: 8080\n    - protocol: TCP\n      port: 8081\n      targetPort: 8081\n",
     "      targetPort: 8080\n",
     "a Service with several ports must name them all: my-service1 keeps one unnamed port"),
    ("virtualservice_destinationhosts.yaml", "    - {} # test destination null\n", "",
     "a route entry needs a destination (the CRD requires it); Istio counts the missing one "
     "as a second unknown host of reviews-bogushost, the same (code, object) as the first"),
    ("virtualservice_destinationhosts.yaml", "name: http-test\n    protocol: HTTP\n",
     "name: http-test\n    protocol: TCP\n",
     "a Service port's protocol is TCP, UDP or SCTP"),
    ("virtualservice_destinationhosts.yaml", "name: https-test\n    protocol: HTTPS\n",
     "name: https-test\n    protocol: TCP\n",
     "a Service port's protocol is TCP, UDP or SCTP"),
    ("virtualservice_route_rule_no_effects_ingress.yaml",
     "name: http-ratings\n    protocol: HTTP\n", "name: http-ratings\n    protocol: TCP\n",
     "a Service port's protocol is TCP, UDP or SCTP"),
    ("gateway-no-workload.yaml", "    istio: ingresstypo\n",
     "    istio: ingresstypo\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n"
     "    hosts: ['*']\n",
     "a Gateway needs at least one server; the case is about its selector"),
    ("conflicting-gateways-multiple-ports.yaml", "      number: 90\n      name: tcp\n",
     "      number: 90\n      name: tcp-90\n",
     "the port names of a Gateway's servers must differ"),
    ("conflicting-gateways-multiple-ports.yaml", "      number: 90\n      name: http\n",
     "      number: 90\n      name: http-90\n",
     "the port names of a Gateway's servers must differ"),
    *[(name, "    - 'web.testing-02-04.com'\n    port:\n      name: http\n",
       "    - 'web.testing-02-04.com'\n    port:\n      name: http-2\n",
       "the port names of a Gateway's servers must differ")
      for name in ("virtualservice_host_not_found_gateway.yaml",
                   "virtualservice_host_not_found_gateway_beta.yaml")],
    # Its VirtualServices have no routes (http, tcp or tls is required): each gets one. Its
    # Gateways have no server either, which is left as it is: pilotfish refuses them
    # (PF0001), and a Gateway that is not served admits no host, which is what Istio reports.
    *[("virtualservice_gateways.yaml", f"  - {gateway}\n",
       f"  - {gateway}\n  http:\n  - route:\n    - destination: {{host: httpbin}}\n",
       "a VirtualService needs http, tcp or tls routes")
      for gateway in ("httpbin-gateway # Expected: no validation error since this gateway "
                      "exists",
                      "httpbin-gateway-bogus # Expected: validation error since this gateway "
                      "does not exist",
                      'mesh # Expected: no validation error, "mesh" is a special-case value',
                      "another/crossnamespace-gw  # No validation error expected")],
    ("virtualservice_gateways.yaml", '  hosts:\n  - "*"\n  gateways:\n  - mesh',
     "  hosts:\n  - httpbin\n  gateways:\n  - mesh",
     "a VirtualService for the sidecars (mesh) may not claim every host ('*')"),
    ("gateway-secrets.yaml", "name: defaultgateway-bogusCredentialName\n",
     "name: defaultgateway-boguscredentialname\n",
     "an object's name is a lowercase RFC 1123 subdomain (RENAMED maps it back)"),
    ("gateway-secrets.yaml", "      mode: SIMPLE\n    hosts:",
     "      mode: SIMPLE\n      serverCertificate: /etc/certs/cert.pem\n"
     "      privateKey: /etc/certs/key.pem\n    hosts:",
     "SIMPLE TLS without credentialName needs serverCertificate and privateKey"),
    ("authorizationpolicies.yaml", '  - "*.kiali.io"\n', "",
     "a DNS ServiceEntry without endpoints needs fully qualified hosts"),
    ("sidecar-default-selector.yaml", "  containers:\n  - image: proxyv2\n",
     "  containers:\n  - name: app\n    image: proxyv2\n", "a container needs a name"),
    *[("sidecar-default-selector.yaml", old, old + '  egress: [{hosts: ["./*"]}]\n',
       "a Sidecar must set egress, ingress, outboundTrafficPolicy or inboundConnectionPool")
      for old in ("    labels:\n      app: ambient\n",)],
    *[("sidecar-default-selector.yaml", old, old + 'spec: {egress: [{hosts: ["./*"]}]}\n',
       "a Sidecar must set egress, ingress, outboundTrafficPolicy or inboundConnectionPool")
      for old in ("  name: namespace-scoped\n  namespace: ns-ambient\n",
                  "  name: namespace-not-ambient\n  namespace: ns-not-ambient\n",
                  "  name: namespace-not-ambient\n  namespace: ns-not-ambient-rev\n")],
    ("virtualservice_internal_gateway_ref.yaml",
     "gateway~istio-autogenerated-k8s-gateway~foo", "gateway-istio-autogenerated-k8s-gateway-foo",
     "'~' is not allowed in a gateway name; pilotfish names the Gateways it generates from a "
     "Gateway API Gateway with '-' (<gateway>-istio-autogenerated-k8s-gateway-<listener>)"),
)


# Messages pilotfish gives that Istio's analyzers do not, by input file, and why.
ALSO_GIVEN = {
    **{("gateway-duplicate-certificate.yaml", "IST0138",
        f"Gateway istio-system/gateway-02-test-0{n}"):
       "Istio reports a certificate two Gateways share only on the Gateway whose selector "
       "is within the other's; the proxies both select serve both Gateways, so a reused "
       "connection misroutes either's requests, and pilotfish reports both"
       for n in (2, 3)},
    ("virtualservice_overlappingmatches.yaml", "IST0130",
     "VirtualService default/overlapping-in-two-matches"):
        "its second rule's only match is within the first rule's (a longer URI prefix, the "
        "same method), so the rule is never used; Istio reports the match only",
    ("virtualservice_overlappingmatches.yaml", "IST0131",
     "VirtualService default/uri-with-prefix-exact"):
        "an exact URI '/' with method GET, after a prefix '/' that asks for nothing else, is "
        "never used; Istio compares URI prefixes only with prefixes",
}

# Objects a repair renamed, by the name Istio's expectations give them.
RENAMED = {"Gateway default/defaultgateway-boguscredentialname":
           "Gateway default/defaultgateway-bogusCredentialName"}


def istio_object(written: str) -> str:
    kind, name = written.split(" ")
    return f"{kind} {name if '/' in name else 'default/' + name}"


def copy_repaired(corpus: Path, tmp_path: Path, name: str) -> None:
    text = (corpus / "analyzers" / name).read_text()
    for file, old, new, _ in REPAIRS:
        if file == name:
            assert old in text, (name, old)
            text = text.replace(old, new, 1)
    (tmp_path / name).write_text(text)


@pytest.mark.corpus
@pytest.mark.parametrize(("analyzer", "files", "expected"), ISTIO_CASES,
                         ids=[f"{case[0]}:{case[1][0]}" for case in ISTIO_CASES])
def test_corpus_istio_analyzer_messages(corpus: Path, tmp_path: Path, analyzer: str,
                                        files: tuple[str, ...],
                                        expected: tuple[tuple[str, str], ...]) -> None:
    for name in files:
        copy_repaired(corpus, tmp_path, name)
    (tmp_path / "istio-defaults.yaml").write_text(ISTIO_DEFAULTS)
    inputs, problems = analyze.load(tmp_path, meshconfig.MeshConfig())
    given = {(f.istio.code, RENAMED.get(name, name))
             for f in [*problems, *analyze.run(inputs)]
             if f.istio is not None and analyzer in f.istio.analyzers and f.key is not None
             for name in [f"{f.key.kind} {f.key.namespace}/{f.key.name}"]}
    also = {(code, obj) for file, code, obj in ALSO_GIVEN if file in files}
    assert given == also | {(code, istio_object(obj)) for code, obj in expected
                            if code not in NOT_GIVEN
                            and (code, istio_object(obj)) not in NOT_GIVEN_FOR}


def test_no_check_claims_an_istio_message_said_not_given() -> None:
    assert not {c.istio.code for c in CHECKS if c.istio} & NOT_GIVEN.keys()


@pytest.mark.corpus
def test_corpus_refused_inputs_are_reported(corpus: Path, tmp_path: Path) -> None:
    found = corpus_findings(corpus, tmp_path, *dict.fromkeys(r[0] for r in REPAIRS))
    refused = {f"{f.key.kind} {f.key.namespace}/{f.key.name}" for f in found
               if f.check.code == "PF0001" and f.severity is Level.ERROR and f.key}
    assert {"Service my-namespace1/my-service1", "VirtualService default/reviews-bogushost",
            "Service default/reviews-2port", "Service default/ratings",
            "Gateway default/httpbin-gateway", "Gateway default/alpha", "Gateway default/beta",
            "Gateway istio-system/testing-gateway-01-test-04",
            "VirtualService default/httpbin-bogus", "VirtualService default/httpbin-mesh",
            "VirtualService default/httpbin",
            "Gateway default/defaultgateway-bogusCredentialName",
            "Gateway default/defaultgateway-nocredential", "ServiceEntry httpbin/istio",
            "Pod ns1/random-pod", "Sidecar ns-ambient/pod-scoped"} <= refused
