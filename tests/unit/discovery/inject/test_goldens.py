"""Istio's injector test data (``../shared/corpus/istio/inject``), through ``kube-inject``'s
function and through the webhook's patch, compared with Istio's output.

The cases and their settings are those of Istio's ``TestInjection`` (``inject_test.go.txt``):
its ``--set`` flags become injector values, its mesh changes mesh config, its ``.iop.yaml``
files values, its ``PLATFORM=openshift`` ``global.platform``; the test's hub and tag
(``registry.istio.io/testing``, ``latest``) are given as Istio's test gives them, and the
webhook sees the namespace the test's cluster holds (``test-ns``, with OpenShift's ranges).
Every other input with a golden runs with the defaults.

Istio's output is compared with pilotfish's after one documented mapping
(``istio_to_pilotfish``), which is where pilotfish necessarily differs:

1. images: the proxy and init images are pilotfish's (``HUB/pilotfish:TAG`` where Istio has
   ``HUB/proxyv2:TAG``);
2. ``istio-init`` runs ``pilotfish iptables`` with istio-iptables's flags:
   ``istio-iptables ARGS --log_output_level=S:L`` becomes ``--log-level L iptables ARGS``;
3. ``istio-proxy`` runs ``pilotfish agent``: its command line is pilotfish's own (checked
   by ``test_the_agent_command_line_is_pilotfish_agents`` and
   ``test_a_gateway_runs_pilotfish_agent_as_a_router``, then compared only for the role it
   runs), where Istio's is ``proxy sidecar --domain ... --proxyLogLevel=...`` (``proxy
   router ...`` for the gateway template): ``proxy ROLE`` maps to ``agent --type ROLE``;
   Istio's agent without Envoy (env ``DISABLE_ENVOY=true``, the grpc-agent template) maps
   only to ``agent --type ROLE --proxy grpc`` and the other way round
   (``test_a_grpc_agent_pod_runs_pilotfish_agent_without_a_proxy``);
4. lifecycle hooks: ``pilot-agent wait`` / ``pilot-agent request ...`` become
   ``pilotfish agent wait`` / ``pilotfish agent request ...``;
5. with the CNI plugin Istio adds ``istio-validation`` (pilot-agent's check that the CNI
   set up capture); pilotfish has no such check and adds no init container;
6. a CronJob's pod metadata: Istio's ``kube-inject`` reads and writes it on
   ``spec.jobTemplate.metadata`` (so the pods lack the status annotation and labels);
   pilotfish uses the pod template's, where the webhook would have them.

An image, command line or hook the input already held (a re-injected pod's earlier proxy)
is carried as it was and compared as it is. Serialisation differences are normalised on
both sides: Go's typed round trip writes zero values outside the pod (``status``,
``strategy: {}``, ``false``, ``0``) and ``resources: {}`` / ``creationTimestamp: null`` in
it; JSON held in annotations and env values is compared as JSON.

Known gaps — goldens that need what pilotfish does not build — are listed in ``GAPS`` with
the reason; the tests fail if one of them starts matching or any other case stops.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml

from pilotfish.discovery import admission
from pilotfish.discovery.inject.settings import InjectionError, Settings, deep_merge
from pilotfish.discovery.inject.template import log_level
from pilotfish.discovery.inject.workloads import TEMPLATE_PATHS, inject_object
from pilotfish.testing.kube.patches import json_patch

pytestmark = pytest.mark.corpus

CORPUS = Path(__file__).resolve().parents[4].parent / "shared" / "corpus" / "istio" / "inject"
TEST_VALUES = {"global": {"hub": "registry.istio.io/testing", "tag": "latest"}}
JSON_ENV = {"PROXY_CONFIG", "ISTIO_KUBE_APP_PROBERS", "ISTIO_PROMETHEUS_ANNOTATIONS",
            "ISTIO_META_POD_PORTS"}
JSON_ANNOTATIONS = {"sidecar.istio.io/status", "proxy.istio.io/overrides"}
# The namespaces Istio's test puts in the webhook's cluster: test-ns with OpenShift's SCC
# ranges (securityv1.UIDRangeAnnotation, SupplementalGroupsAnnotation).
NAMESPACES = {"test-ns": {"openshift.io/sa.scc.uid-range": "1000620000/10000",
                          "openshift.io/sa.scc.supplemental-groups": "1000620000/10000"}}

GAPS = {
}


def _iop(name: str) -> dict[str, Any]:
    return (yaml.safe_load((CORPUS / name).read_text()).get("spec") or {}).get("values") or {}


@attrs.frozen
class Case:
    input: str
    want: str = ""
    values: dict[str, Any] = attrs.field(factory=dict)
    mesh: dict[str, Any] = attrs.field(factory=dict)
    native: bool | None = None
    error: str = ""  # the annotation the refusal names
    webhook: bool = True
    kube_inject: bool = True

    @property
    def golden(self) -> str:
        return self.want or self.input + ".injected"

    def settings(self) -> Settings:
        values = deep_merge(TEST_VALUES, self.values)
        if self.native is not None:
            values = deep_merge(values, {"global": {"nativeSidecar": self.native}})
        return Settings.create(values, self.mesh)


def cases() -> list[Case]:
    cni = {"pilot": {"cni": {"enabled": True}}}
    multus = {"pilot": {"cni": {"enabled": True, "provider": "multus"}}}
    status = {"global": {"proxy": {"statusPort": 123, "readinessInitialDelaySeconds": 100,
                                   "readinessPeriodSeconds": 200,
                                   "readinessFailureThreshold": 300}}}
    hold = {"global": {"proxy": {"holdApplicationUntilProxyStarts": True}}}
    tproxy = {"defaultConfig": {"interceptionMode": "TPROXY"}}
    bad = "traffic-annotations-bad-{}.yaml"
    listed = [
        Case("hello.yaml", "hello.yaml.cni.injected",
             {"pilot": {"cni": {"enabled": True, "provider": "default"}},
              "global": {"network": "network1"}}),
        Case("hello.yaml", "hello.yaml.proxyImageName.injected",
             {"global": {"proxy": {"image": "proxyTest"}}}),
        Case("hello.yaml", "hello.yaml.proxyInitImageName.injected",
             {"global": {"proxy_init": {"image": "proxyInitTest"}}}),
        Case("hello.yaml", "hello-tproxy.yaml.injected", mesh=tproxy),
        Case("hello.yaml", "hello-always.yaml.injected", {"global": {"imagePullPolicy": "Always"}}),
        Case("hello.yaml", "hello-never.yaml.injected", {"global": {"imagePullPolicy": "Never"}}),
        Case("hello.yaml", "hello-old-version.yaml.injected", native=False),
        Case("format-duration.yaml", mesh={"defaultConfig": {"drainDuration": "23s"}}),
        Case("traffic-params.yaml", values={"global": {"proxy": {
            "includeIPRanges": "127.0.0.1/24,10.96.0.1/24",
            "excludeIPRanges": "10.96.0.2/24,10.96.0.3/24", "excludeInboundPorts": "4,5,6",
            "statusPort": 0}}}),
        Case("status_params.yaml", values=status),
        Case("kubevirtInterfaces.yaml", values=status),
        Case("reroute-virtual-interfaces.yaml", values=status),
        Case("hello.yaml", "hello-image-secrets-in-values.yaml.injected",
             _iop("hello-image-secrets-in-values.iop.yaml")),
        Case("hello-image-pull-secret.yaml", "hello-multiple-image-secrets.yaml.injected",
             _iop("hello-image-secrets-in-values.iop.yaml")),
        Case("hello.yaml", "hello-template-in-values.yaml.injected",
             _iop("hello-template-in-values.iop.yaml")),
        Case("hello.yaml", "hello-mount-mtls-certs.yaml.injected",
             {"global": {"mountMtlsCerts": True}}),
        Case("hello.yaml", "hello-cncf-networks.yaml.injected", multus),
        Case("hello-existing-cncf-networks.yaml", values=multus),
        Case("hello-existing-cncf-networks-json.yaml", values=multus),
        Case("hello.yaml", "hello.proxyHoldsApplication.yaml.injected", hold),
        Case("hello-probes.yaml", "hello-probes.proxyHoldsApplication.yaml.injected", hold),
        Case("hello-probes-proxyHoldApplication-ProxyConfig.yaml"),
        Case("hello-probes-noProxyHoldApplication-ProxyConfig.yaml", values=hold),
        Case("hello-service.yaml", webhook=False),
        Case("cronjob.yaml", webhook=False),
        Case("cronjob.yaml", "cronjob-old-version.yaml.injected", native=False, webhook=False),
        *(Case(f"{kind}.yaml", f"{kind}-old-version.yaml.injected", native=False)
          for kind in ("daemonset", "job", "pod", "replicaset", "statefulset")),
        Case(bad.format("includeipranges"),
             error="traffic.sidecar.istio.io/includeOutboundIPRanges"),
        Case(bad.format("excludeipranges"),
             error="traffic.sidecar.istio.io/excludeOutboundIPRanges"),
        Case(bad.format("includeinboundports"),
             error="traffic.sidecar.istio.io/includeInboundPorts"),
        Case(bad.format("excludeinboundports"),
             error="traffic.sidecar.istio.io/excludeInboundPorts"),
        Case(bad.format("excludeoutboundports"),
             error="traffic.sidecar.istio.io/excludeOutboundPorts"),
        Case("traffic-annotations.yaml", mesh={"defaultConfig": {"proxyMetadata": {
            "ISTIO_META_TLS_CLIENT_KEY": "/etc/identity/client/keys/client-key.pem"}}}),
        Case("proxy-override.yaml"),
        Case("explicit-security-context.yaml"),
        Case("only-proxy-container.yaml"),
        Case("proxy-override-args.yaml"),
        Case("proxy-override-runas.yaml"),
        Case("proxy-override-runas.yaml", "proxy-override-runas.yaml.cni.injected", cni),
        Case("proxy-override-runas.yaml", "proxy-override-runas.yaml.tproxy.injected",
             mesh=tproxy),
        Case("proxy-override-args.yaml", "proxy-override-args-native.yaml.injected"),
        Case("gateway.yaml"),
        Case("native-sidecar.yaml"),
        Case("native-sidecar.yaml", "native-sidecar-old-version.yaml.injected", native=False),
        Case("native-sidecar-opt-in.yaml"),
        Case("native-sidecar-opt-in.yaml", native=False),
        Case("native-sidecar-opt-out.yaml"),
        Case("native-sidecar-opt-out.yaml", native=False),
        Case("custom-template.yaml", values=_iop("custom-template.iop.yaml")),
        Case("tcp-probes.yaml"),
        Case("hello-host-network-with-ns.yaml"),
        Case("merge-probers.yaml", values=hold),
        Case("hello-tracing-disabled.yaml", mesh={"defaultConfig": {"tracing": {}}}),
        Case("truncate-canonical-name-pod.yaml"),
        Case("truncate-canonical-name-custom-controller-pod.yaml"),
        # OpenShift's (Istio's PLATFORM=openshift): through its webhook only, which reads
        # the namespace (kube-inject has none to read).
        *(Case(name, values=deep_merge(cni, {"global": {"platform": "openshift"}}),
               kube_inject=False) for name in (
            "hello-openshift.yaml", "hello-openshift-custom-injection.yaml",
            "hello-openshift-tproxy.yaml")),
        Case("hello-probes-localhost.yaml", mesh={"inboundTrafficPolicy": {"mode": "LOCALHOST"}}),
        Case("proxy-resources-null.yaml", values=_iop("proxy-resources-null.iop.yaml")),
        Case("proxy-resources-null-no-init.yaml", values=_iop("proxy-resources-null.iop.yaml")),
        *(Case(f"proxy-resources-{name}.yaml", values=_iop(f"proxy-resources-{name}.iop.yaml"))
          for name in ("zero", "memory-null", "mixed-null")),
        Case("sidecar-spire.yaml", values=_iop("spire-template.iop.yaml")),
        Case("gateway-spire.yaml", values=_iop("spire-template.iop.yaml")),
        Case("hello-otel-semconv.yaml", mesh={"extensionProviders": [{
            "name": "otel", "opentelemetry": {
                "service": "otel-collector.observability.svc.cluster.local", "port": 4317,
                "serviceAttributeEnrichment": "OTEL_SEMANTIC_CONVENTIONS"}}]}),
        Case("hello.yaml", "hello-fips-140-3.yaml.injected",
             {"global": {"compliancePolicy": "fips-140-3"}}),
    ]
    # As Istio's test: every other input with a golden, with the defaults.
    covered = {c.golden for c in listed}
    skip = {"injection-template.yaml", "grpc-agent-template.yaml"}
    listed += [Case(p.name) for p in sorted(CORPUS.glob("*.yaml"))
               if not p.name.endswith(".iop.yaml") and p.name not in skip
               and p.name + ".injected" not in covered
               and (CORPUS / (p.name + ".injected")).exists()]
    return listed


# -- the mapping and the normalisation -------------------------------------------------

def _walk_containers(obj: Any) -> Iterator[tuple[dict[str, Any], str]]:
    """(holder of a container list, field) for every pod spec in ``obj``."""
    if isinstance(obj, dict):
        for field in ("containers", "initContainers"):
            items = obj.get(field)
            if isinstance(items, list) and all(isinstance(c, dict) for c in items):
                yield obj, field
        for value in obj.values():
            yield from _walk_containers(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from _walk_containers(value)


def _maps(obj: Any) -> Iterator[dict[str, Any]]:
    """Every mapping in ``obj``, at any depth."""
    if isinstance(obj, dict):
        yield obj
        for value in obj.values():
            yield from _maps(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from _maps(value)


def carried(docs: Any) -> set[str]:
    """The images, argument lists and commands the input already holds (JSON text)."""
    return {json.dumps(o[k]) for o in _maps(docs) for k in ("image", "args", "command")
            if k in o}


def istio_to_pilotfish(golden: Any, held: set[str]) -> Any:
    """What pilotfish should produce where Istio produced ``golden`` (the mapping above)."""
    out = copy.deepcopy(golden)
    for holder, field in list(_walk_containers(out)):
        holder[field] = [c for c in holder[field] if c.get("name") != "istio-validation"]
        for c in holder[field]:
            name, args = c.get("name"), c.get("args") or []
            image = c.get("image")
            if name in ("istio-proxy", "istio-init") and isinstance(image, str) and not (
                    name == "istio-proxy" and json.dumps(image) in held):
                c["image"] = image.replace("/proxyv2:", "/pilotfish:")
            if name == "istio-init" and args[:1] == ["istio-iptables"]:
                level = next((a.split("=", 1)[1] for a in args
                              if a.startswith("--log_output_level=")), "default:info")
                c["args"] = ["--log-level", log_level(level), "iptables", *(
                    a for a in args[1:] if not a.startswith("--log_output_level="))]
            for hook in (c.get("lifecycle") or {}).values():
                command = ((hook or {}).get("exec") or {}).get("command")
                if command and command[0] == "pilot-agent" and json.dumps(command) not in held:
                    hook["exec"]["command"] = ["pilotfish", "agent", *command[1:]]

    for holder in _maps(out):
        annotations = holder.get("annotations")
        text = annotations.get("sidecar.istio.io/status") \
            if isinstance(annotations, dict) else None
        if text:
            status = json.loads(text)
            inits = [n for n in status.get("initContainers") or () if n != "istio-validation"]
            status["initContainers"] = inits or None
            annotations["sidecar.istio.io/status"] = json.dumps(status)
    if isinstance(out, dict) and out.get("kind") == "CronJob":
        job = out["spec"]["jobTemplate"]
        template = job["spec"]["template"]
        template["metadata"] = {**(template.get("metadata") or {}),
                                **(job.pop("metadata", None) or {})}
    return out


def _proxy_role(container: dict[str, Any]) -> str | None:
    """The role a proxy's command line runs: Istio's ``proxy sidecar`` / ``proxy router``,
    pilotfish's ``[--log-level L] agent --type sidecar`` / ``... --type router``; either
    without a proxy (Istio's ``DISABLE_ENVOY=true``, pilotfish's ``--proxy grpc``)."""
    args = container["args"]
    if args[:1] == ["proxy"] and len(args) > 1:
        env = {e.get("name"): e.get("value") for e in container.get("env") or ()}
        return str(args[1]) + (" without a proxy" if env.get("DISABLE_ENVOY") == "true"
                               else "")
    if "agent" in args[:3]:
        rest = args[args.index("agent") + 1:]
        if rest[:1] != ["--type"] or len(rest) < 2:
            return None
        proxyless = rest[2:4] == ["--proxy", "grpc"]
        return str(rest[1]) + (" without a proxy" if proxyless else "")
    return None


def agent_args_left_out(obj: Any, held: set[str]) -> Any:
    """The proxy's command line, not carried from the input, as the role it runs: Istio's
    ``proxy ROLE`` and pilotfish's ``agent --type ROLE`` compare equal (the rest of the
    line is checked by the command line tests below); different roles do not."""
    for holder, field in _walk_containers(obj):
        for c in holder[field]:
            args = c.get("args")
            if c.get("name") == "istio-proxy" and isinstance(args, list) and \
                    json.dumps(args) not in held:
                role = _proxy_role(c)
                if role is not None:
                    c["args"] = f"<the agent's command line, as {role}>"
    return obj


def _in_pod(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _in_pod(v) for k, v in value.items()
                if v is not None and not (k in ("resources", "status") and v == {})}
    if isinstance(value, list):
        return [_in_pod(v) for v in value]
    return value


def _go_zero(value: Any) -> Any:
    if isinstance(value, dict):
        out = {k: _go_zero(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, {}, [], 0, False, "")}
    if isinstance(value, list):
        return [_go_zero(v) for v in value]
    return value


def _json_values(obj: Any) -> Any:
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            if key == "annotations" and isinstance(value, dict):
                value = {k: _in_pod(json.loads(v)) if k in JSON_ANNOTATIONS else v
                         for k, v in value.items()}
            elif key == "env" and isinstance(value, list):
                value = [{**e, "value": json.loads(e["value"])}
                         if e.get("name") in JSON_ENV and "value" in e else e for e in value]
            else:
                value = _json_values(value)
            out[key] = value
        return out
    if isinstance(obj, list):
        return [_json_values(v) for v in obj]
    return obj


def normalise(doc: Any) -> Any:
    if not isinstance(doc, dict):
        return doc
    if doc.get("kind") == "List":
        out = _go_zero({k: v for k, v in doc.items() if k != "items"})
        out["items"] = [normalise(item) for item in doc.get("items") or ()]
        return out
    path = TEMPLATE_PATHS.get(str(doc.get("kind")))
    if path is None:
        return _go_zero(doc)
    doc = copy.deepcopy(doc)
    doc.pop("status", None)
    if not path:
        return _json_values(_in_pod(doc))
    holder = doc
    for step in path[:-1]:
        holder = holder.setdefault(step, {})
    pod = holder.pop(path[-1], None)
    out = _go_zero(doc)
    holder = out
    for step in path[:-1]:
        holder = holder.setdefault(step, {})
    if pod is not None:
        holder[path[-1]] = _in_pod(pod)
    return _json_values(out)


def _docs(name: str) -> list[Any]:
    return [d for d in yaml.safe_load_all((CORPUS / name).read_text()) if d is not None]


def kube_inject(case: Case) -> tuple[list[Any], list[Any]]:
    """(pilotfish's output, Istio's mapped), normalised, for a case's whole file."""
    docs = _docs(case.input)
    held = carried(docs)
    settings = case.settings()
    got = [inject_object(doc, settings) for doc in docs]
    want = _docs(case.golden)
    return ([agent_args_left_out(normalise(d), held) for d in got],
            [agent_args_left_out(normalise(istio_to_pilotfish(d, held)), held) for d in want])


def object_to_pod(obj: dict[str, Any]) -> dict[str, Any]:
    """The pod a controller makes of ``obj`` (Istio's test's objectToPod): generated name
    and controller reference; a Deployment's through a ReplicaSet NAME-fake."""
    obj = copy.deepcopy(obj)
    kind, name, api = obj["kind"], obj["metadata"].get("name", ""), obj.get("apiVersion", "")
    if kind == "Pod":
        return obj

    def owned(template: dict[str, Any], owner: str, owner_api: str, owner_kind: str
              ) -> dict[str, Any]:
        metadata = dict(template.get("metadata") or {})
        metadata["generateName"] = owner
        metadata["ownerReferences"] = [{"apiVersion": owner_api, "kind": owner_kind,
                                        "name": owner, "controller": True}]
        return {"metadata": metadata, "spec": template["spec"]}

    if kind == "CronJob":
        return owned(obj["spec"]["jobTemplate"]["spec"]["template"], name, api, kind)
    if kind == "Deployment":
        pod = owned(obj["spec"]["template"], name + "-fake", "apps/v1", "ReplicaSet")
        pod["metadata"]["generateName"] += "-"
        pod["metadata"]["labels"] = {**(pod["metadata"].get("labels") or {}),
                                     "pod-template-hash": "fake"}
        return pod
    return owned(obj["spec"]["template"], name, api, kind)


def _injectables(doc: Any) -> Iterator[dict[str, Any]]:
    if isinstance(doc, dict) and doc.get("kind") == "List":
        for item in doc.get("items") or ():
            yield from _injectables(item)
    elif isinstance(doc, dict) and doc.get("kind") in TEMPLATE_PATHS:
        yield doc


def webhook(case: Case) -> list[tuple[Any, Any]]:
    """For each pod of the input: (the pod after the webhook's patch, Istio's mapped), with
    the status annotation left out as Istio's own webhook test leaves it out."""
    docs = [d for doc in _docs(case.input) for d in _injectables(doc)]
    wants = [d for doc in _docs(case.golden) for d in _injectables(doc)]
    held = carried(docs)
    settings = case.settings()
    out = []
    for doc, want in zip(docs, wants, strict=True):
        pod = object_to_pod(doc)
        namespace = doc["metadata"].get("namespace", "")
        body = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "request": {"uid": "1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                            "operation": "CREATE", "namespace": namespace, "object": pod}}
        response = admission.inject_review(admission.parse(json.dumps(body).encode()),
                                           settings, namespaces=lambda ns: NAMESPACES.get(
                                               ns, {}))["response"]
        if not response["allowed"]:
            raise InjectionError(response["status"]["message"])
        patched = json_patch(pod, json.loads(base64.b64decode(response["patch"]))) \
            if response.get("patch") else pod
        if not namespace:
            patched["metadata"].pop("namespace", None)
        expected = object_to_pod(want)
        for each in (patched, expected):
            (each["metadata"].get("annotations") or {}).pop("sidecar.istio.io/status", None)
        out.append((agent_args_left_out(_json_values(_in_pod(patched)), held),
                    agent_args_left_out(_json_values(_in_pod(istio_to_pilotfish(expected, held))),
                                        held)))
    return out


def _outcome(run: Any, case: Case) -> bool:
    try:
        result = run(case)
    except InjectionError:
        return False
    pairs = [result] if isinstance(result, tuple) else result
    return all(got == want for got, want in pairs)


@pytest.mark.parametrize(("path", "matched", "total"), [
    ("kube-inject", 117, 117), ("webhook", 117, 117)])
def test_every_golden_matches_but_the_known_gaps(path: str, matched: int, total: int):
    run = kube_inject if path == "kube-inject" else webhook
    runs = [c for c in cases() if not c.error and getattr(c, path.replace("-", "_"))]
    failed = {c.golden for c in runs if not _outcome(run, c)}
    goldens = {c.golden for c in runs}
    gaps = set(GAPS) & goldens
    assert failed == gaps, "unexpected: " + ", ".join(sorted(failed ^ gaps))
    assert (len(goldens - failed), len(goldens)) == (matched, total)


def test_every_golden_is_used_and_every_gap_is_a_golden():
    all_cases = cases()
    used = {c.golden for c in all_cases if not c.error}
    on_disk = {p.name for p in CORPUS.glob("*.injected")}
    assert used == on_disk
    assert set(GAPS) <= on_disk


@pytest.mark.parametrize("case", [c for c in cases() if c.error], ids=lambda c: c.input)
def test_a_bad_traffic_annotation_is_refused_naming_it(case: Case):
    with pytest.raises(InjectionError) as caught:
        for doc in _docs(case.input):
            inject_object(doc, case.settings())
    assert case.error in str(caught.value)


def _parsed_as_kubernetes_runs_it(args: list[str]) -> Any:
    """``pilotfish``'s parse of a container's args once Kubernetes expanded ``$(VAR)``."""
    from pilotfish.cli.main import build_parser

    expanded = [a.replace("$(POD_NAME)", "hello-1").replace("$(POD_NAMESPACE)", "default")
                .replace("$(INSTANCE_IP)", "10.1.0.5").replace("$(SERVICE_ACCOUNT)", "default")
                .replace("$(CA_ADDR)", "istiod.istio-system.svc:15012") for a in args]
    return build_parser(expanded).parse_args(expanded)


def test_the_agent_command_line_is_pilotfish_agents():
    [doc] = _docs("hello.yaml")
    injected = inject_object(doc, Case("hello.yaml").settings())
    spec = injected["spec"]["template"]["spec"]
    [proxy] = [c for c in spec["initContainers"] if c["name"] == "istio-proxy"]
    args = proxy["args"]
    assert args[:5] == ["--log-level", "info", "agent", "--type", "sidecar"]
    flags = dict(zip(args[3::2], args[4::2], strict=False))
    assert flags["--discovery"] == "istiod.istio-system.svc:15012"
    assert flags["--name"] == "$(POD_NAME)" and flags["--ip"] == "$(INSTANCE_IP)"
    assert flags["--namespace"] == "$(POD_NAMESPACE)"
    assert flags["--proxy-log-level"] == "warning" and flags["--status-port"] == "15020"
    assert flags["--token-file"] == "/var/run/secrets/tokens/istio-token"
    assert flags["--root-cert"] == "/var/run/secrets/istio/root-cert.pem"
    assert flags["--pod-ports"] == "http:80/TCP" and flags["--config-dir"] == "/etc/istio/proxy"
    # pilotfish agent accepts exactly this command line
    parsed = _parsed_as_kubernetes_runs_it(args)
    assert (parsed.command, parsed.name, parsed.ip) == ("agent", "hello-1", "10.1.0.5")
    init = next(c for c in spec["initContainers"] if c["name"] == "istio-init")
    parsed = _parsed_as_kubernetes_runs_it(init["args"])
    assert (parsed.command, parsed.istio_local_exclude_ports) == ("iptables", "15090,15021,15020")


def test_a_gateway_runs_pilotfish_agent_as_a_router():
    [doc] = _docs("gateway.yaml")
    injected = inject_object(doc, Case("gateway.yaml").settings())
    spec = injected["spec"]["template"]["spec"]
    assert "initContainers" not in spec  # no capture, and not a native sidecar
    [proxy] = spec["containers"]
    args = proxy["args"]
    assert args[:5] == ["--log-level", "info", "agent", "--type", "router"]
    flags = dict(zip(args[3::2], args[4::2], strict=False))
    assert flags["--discovery"] == "istiod.istio-system.svc:15012"
    assert flags["--labels"] == ("istio=ingressgateway,"
                                 "service.istio.io/canonical-name=istio-ingressgateway,"
                                 "service.istio.io/canonical-revision=latest")
    # the pod declares 15090 (http-envoy-prom): the router serves its metrics there
    assert flags["--prometheus-port"] == "15090"
    assert proxy["ports"][0]["containerPort"] == 15090
    parsed = _parsed_as_kubernetes_runs_it(args)
    assert (parsed.command, parsed.proxy_type, parsed.prometheus_port) == \
        ("agent", "router", 15090)


def test_a_role_maps_only_to_the_same_role():
    # The allowed difference is the command line's form, not the role it runs.
    sidecar = {"name": "istio-proxy", "args": ["--log-level", "info", "agent", "--type",
                                               "sidecar", "--name", "x"]}
    router = {"name": "istio-proxy", "args": ["proxy", "router", "--domain", "d"]}
    [got] = agent_args_left_out({"containers": [sidecar]}, set())["containers"]
    [want] = agent_args_left_out({"containers": [router]}, set())["containers"]
    assert got["args"] != want["args"]


def test_a_grpc_agent_pod_runs_pilotfish_agent_without_a_proxy():
    [doc] = _docs("grpc-agent.yaml")
    injected = inject_object(doc, Case("grpc-agent.yaml").settings())
    spec = injected["spec"]["template"]["spec"]
    assert "initContainers" not in spec  # no capture
    [app, proxy] = spec["containers"]
    args = proxy["args"]
    assert args[:7] == ["--log-level", "info", "agent", "--type", "sidecar", "--proxy", "grpc"]
    flags = dict(zip(args[5::2], args[6::2], strict=False))
    assert flags["--discovery"] == "istiod.istio-system.svc:15012"  # xDS over mTLS
    assert flags["--status-port"] == "15020" and flags["--config-dir"] == "/etc/istio/proxy"
    assert flags["--token-file"] == "/var/run/secrets/tokens/istio-token"
    env = {e["name"]: e.get("value") for e in proxy["env"]}
    assert env["OUTPUT_CERTS"] == "/var/lib/istio/data"  # where the agent writes the files
    parsed = _parsed_as_kubernetes_runs_it(args)
    assert (parsed.command, parsed.proxy_type, parsed.proxy) == ("agent", "sidecar", "grpc")
    assert proxy["lifecycle"]["postStart"]["exec"]["command"] == [
        "pilotfish", "agent", "wait", "--url=http://localhost:15020/healthz/ready"]
    assert {"name": "GRPC_XDS_BOOTSTRAP", "value": "/etc/istio/proxy/grpc-bootstrap.json"} \
        in app["env"]


def test_a_proxyless_agent_maps_only_to_a_proxyless_agent():
    agent = ["--log-level", "info", "agent", "--type", "sidecar"]
    pilotfish = {"name": "istio-proxy", "args": [*agent, "--proxy", "grpc", "--name", "x"]}
    istio = {"name": "istio-proxy", "args": ["proxy", "sidecar", "--domain", "d"],
             "env": [{"name": "DISABLE_ENVOY", "value": "true"}]}
    with_envoy = {"name": "istio-proxy", "args": [*agent, "--name", "x"]}
    [got, envoy] = agent_args_left_out({"containers": [pilotfish, with_envoy]},
                                       set())["containers"]
    [want] = agent_args_left_out({"containers": [istio]}, set())["containers"]
    assert got["args"] == want["args"] != envoy["args"]
