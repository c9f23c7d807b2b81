"""``pilotfish kube-inject``: several documents in, each workload's pods injected, the rest
as they were; skipped pods said on stderr; errors name the file and the document."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from pilotfish.cli.main import main

MANIFESTS = """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web, version: v1}}
    spec:
      containers:
      - {name: web, image: example/web:1, ports: [{name: http, containerPort: 8080}]}
---
apiVersion: v1
kind: Pod
metadata: {name: debug, namespace: shop}
spec:
  containers: [{name: shell, image: example/shell:1}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: report, namespace: shop}
spec:
  schedule: "0 * * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers: [{name: report, image: example/report:1}]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: node-agent, namespace: shop}
spec:
  selector: {matchLabels: {app: node-agent}}
  template:
    metadata: {labels: {app: node-agent}}
    spec:
      hostNetwork: true
      containers: [{name: agent, image: example/agent:1}]
---
apiVersion: v1
kind: List
items:
- apiVersion: apps/v1
  kind: StatefulSet
  metadata: {name: db, namespace: shop}
  spec:
    selector: {matchLabels: {app: db}}
    serviceName: db
    template:
      metadata: {labels: {app: db}}
      spec:
        containers: [{name: db, image: example/db:1}]
"""


def pod_specs(doc: dict) -> list[dict]:
    kind = doc["kind"]
    if kind == "List":
        return [spec for item in doc["items"] for spec in pod_specs(item)]
    if kind == "Pod":
        return [doc]
    if kind == "CronJob":
        return [doc["spec"]["jobTemplate"]["spec"]["template"]]
    return [doc["spec"]["template"]] if "template" in doc.get("spec", {}) else []


def test_a_multi_document_file_is_injected_workload_by_workload(tmp_path: Path, capsys):
    source = tmp_path / "app.yaml"
    source.write_text(MANIFESTS)
    out = tmp_path / "injected.yaml"
    assert main(["kube-inject", "-f", str(source), "-o", str(out)]) == 0
    docs = list(yaml.safe_load_all(out.read_text()))
    assert [d["kind"] for d in docs] == ["Service", "Deployment", "Pod", "CronJob", "DaemonSet",
                                         "List"]
    assert docs[0] == yaml.safe_load(MANIFESTS.split("---")[0])  # not a workload: as it was
    injected = {d["kind"]: pod_specs(d) for d in docs}
    for kind in ("Deployment", "Pod", "CronJob", "List"):
        [pod] = injected[kind]
        names = [c["name"] for c in pod["spec"]["initContainers"]]
        assert names == ["istio-init", "istio-proxy"], kind
        status = json.loads(pod["metadata"]["annotations"]["sidecar.istio.io/status"])
        assert status["revision"] == "default"
    proxy = injected["Deployment"][0]["spec"]["initContainers"][1]
    env = {e["name"]: e.get("value") for e in proxy["env"]}
    assert env["ISTIO_META_OWNER"] == "kubernetes://apis/apps/v1/namespaces/shop/deployments/web"
    assert proxy["image"].endswith("/pilotfish:" + proxy["image"].rsplit(":", 1)[1])
    # host networking: left alone, and said so
    [daemon] = injected["DaemonSet"]
    assert "initContainers" not in daemon["spec"]
    assert ('Skipping injection because DaemonSet "shop/node-agent" has host networking '
            'enabled') in capsys.readouterr().err


def test_values_come_from_the_mesh_config_and_set(tmp_path: Path, capsys):
    source = tmp_path / "pod.yaml"
    source.write_text(MANIFESTS.split("---")[2])
    mesh = tmp_path / "pilotfish.yaml"
    mesh.write_text("injection:\n  global:\n    hub: registry.example.com/mesh\n"
                    "    tag: '1.2'\n"
                    "mesh:\n  defaultConfig: {holdApplicationUntilProxyStarts: true}\n")
    assert main(["kube-inject", "-f", str(source), "--mesh-config", str(mesh),
                 "--set", "global.nativeSidecar=false", "--set", "pilot.cni.enabled=true"]) == 0
    [pod] = list(yaml.safe_load_all(capsys.readouterr().out))
    spec = pod["spec"]
    assert [c["name"] for c in spec["containers"]] == ["istio-proxy", "shell"]  # waits first
    assert "initContainers" not in spec or spec["initContainers"] == []  # CNI: no istio-init
    proxy = spec["containers"][0]
    assert proxy["image"] == "registry.example.com/mesh/pilotfish:1.2"
    assert proxy["lifecycle"]["postStart"]["exec"]["command"] == ["pilotfish", "agent", "wait"]
    assert pod["metadata"]["annotations"]["traffic.sidecar.istio.io/includeInboundPorts"] == "*"


def test_a_bad_annotation_names_the_file_document_and_annotation(tmp_path: Path, capsys):
    source = tmp_path / "bad.yaml"
    source.write_text(MANIFESTS.split("---")[0] + "---\n" + """\
apiVersion: v1
kind: Pod
metadata:
  name: bad
  annotations: {traffic.sidecar.istio.io/includeInboundPorts: "http"}
spec:
  containers: [{name: app, image: example/app:1}]
""")
    assert main(["kube-inject", "-f", str(source)]) == 2
    err = capsys.readouterr().err
    assert f"pilotfish kube-inject: {source}: document 2 (Pod bad): annotation " \
           "traffic.sidecar.istio.io/includeInboundPorts: 'http' is not a port" in err


def test_unreadable_yaml_is_an_error_with_the_file_and_line(tmp_path: Path, capsys):
    source = tmp_path / "broken.yaml"
    source.write_text("kind: Pod\nmetadata: {name: [\n")
    assert main(["kube-inject", "-f", str(source)]) == 2
    assert f"{source}:3: invalid YAML" in capsys.readouterr().err


def test_the_example_of_the_docs_is_injected_as_they_say(tmp_path: Path, capsys):
    import re

    doc = (Path(__file__).resolve().parents[3] / "docs" / "injection.md").read_text()
    example = re.search(r"For example, `web.yaml`:\n\n```yaml\n(.*?)```", doc, re.S)
    assert example is not None
    (tmp_path / "web.yaml").write_text(example.group(1))
    assert main(["kube-inject", "-f", str(tmp_path / "web.yaml")]) == 0
    service, deployment = yaml.safe_load_all(capsys.readouterr().out)
    assert service == yaml.safe_load(example.group(1).split("---")[0])
    template = deployment["spec"]["template"]
    assert template["metadata"]["labels"]["service.istio.io/canonical-revision"] == "v1"
    init, proxy = template["spec"]["initContainers"]
    assert init["args"] == ["--log-level", "info", "iptables", "-p", "15001", "-z", "15006",
                            "-u", "1337", "-m", "REDIRECT", "-i", "*", "-x", "", "-b", "*",
                            "-d", "15090,15021,15020"]
    assert proxy["restartPolicy"] == "Always"
    assert proxy["lifecycle"]["preStop"]["exec"]["command"] == [
        "pilotfish", "agent", "request", "--debug-port=15020", "POST", "drain"]
    assert template["spec"]["containers"][0]["readinessProbe"]["httpGet"] == {
        "path": "/app-health/web/readyz", "port": 15020}
