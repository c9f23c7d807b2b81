"""``pilotfish manifest generate``: every object an install applies, parsed back; profiles,
``--set`` and its errors; the vendored CRDs equal to the corpus."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from pilotfish.cli import manifests
from pilotfish.cli.main import build_parser, main

ROOT = Path(__file__).resolve().parents[3]
CRDS = ROOT / "cli" / "crds"


def generate(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, Any]]:
    assert main(["manifest", "generate", *args]) == 0
    return [d for d in yaml.load_all(capsys.readouterr().out, Loader=yaml.CSafeLoader)
            if d is not None]


def named(objects: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(o["kind"], o["metadata"]["name"]) for o in objects
            if o["kind"] != "CustomResourceDefinition"]


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


def test_default_profile_prints_every_object_in_apply_order(capsys):
    objects = generate(capsys)
    for obj in objects:
        assert obj["apiVersion"] and obj["kind"] and obj["metadata"]["name"]
    assert named(objects) == [
        ("Namespace", "istio-system"), ("ServiceAccount", "istiod"),
        ("ClusterRole", "istiod-clusterrole-istio-system"),
        ("ClusterRoleBinding", "istiod-clusterrole-istio-system"),
        ("Role", "istiod"), ("RoleBinding", "istiod"), ("ConfigMap", "istio"),
        ("ConfigMap", "pilotfish"), ("Service", "istiod"), ("Deployment", "istiod"),
        ("PodDisruptionBudget", "istiod"),
        ("MutatingWebhookConfiguration", "istio-sidecar-injector"),
        ("ValidatingWebhookConfiguration", "istio-validator-istio-system")]
    crds = [o for o in objects if o["kind"] == "CustomResourceDefinition"]
    assert objects[:len(crds)] == crds  # CRDs first
    names = {c["metadata"]["name"] for c in crds}
    assert {"virtualservices.networking.istio.io", "authorizationpolicies.security.istio.io",
            "httproutes.gateway.networking.k8s.io", "gateways.gateway.networking.k8s.io"} <= names
    namespaced = [o for o in objects if o["kind"] not in (
        "CustomResourceDefinition", "Namespace", "ClusterRole", "ClusterRoleBinding",
        "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")]
    assert {o["metadata"]["namespace"] for o in namespaced} == {"istio-system"}


def test_service_has_istios_port_names(capsys):
    service = by_kind(generate(capsys), "Service")
    assert [(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [
        ("grpc-xds", 15010, 15010), ("https-dns", 15012, 15012),
        ("https-webhook", 443, 15017), ("http-monitoring", 15014, 15014)]


def test_deployment_runs_discovery_with_args_it_accepts(capsys):
    objects = generate(capsys)
    deployment = by_kind(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == manifests.image(manifests.values())
    assert container["command"] == ["pilotfish"]
    args = build_parser(container["args"]).parse_args(container["args"])
    assert (args.xds_address, args.secure_xds_address, args.debug_address,
            args.webhook_address) == ("0.0.0.0:15010", "0.0.0.0:15012", "0.0.0.0:15014",
                                      "0.0.0.0:15017")
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 15014}
    assert pod["serviceAccountName"] == "istiod"
    assert pod["securityContext"]["runAsUser"] == 1337
    assert deployment["spec"]["selector"]["matchLabels"] == \
        by_kind(objects, "Service")["spec"]["selector"]


def test_discovery_reads_the_config_the_install_mounts(capsys, tmp_path: Path):
    from pilotfish.core import meshconfig
    from pilotfish.discovery.inject.settings import Settings

    objects = generate(capsys, "--set", "hub=registry.example.com/mesh", "--set", "tag=9.9")
    configmaps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
    (tmp_path / "pilotfish.yaml").write_text(configmaps["pilotfish"]["data"]["pilotfish.yaml"])
    config = meshconfig.load(str(tmp_path / "pilotfish.yaml"))
    settings = Settings.create(config.injection, config.mesh_fields)
    assert settings.values["global"]["hub"] == "registry.example.com/mesh"
    mesh = yaml.safe_load(configmaps["istio"]["data"]["mesh"])
    assert mesh["defaultConfig"]["discoveryAddress"] == "istiod.istio-system.svc:15012"
    assert by_kind(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0][
        "image"] == "registry.example.com/mesh/pilotfish:9.9"


def test_webhooks_are_webhook_configs_without_a_ca_bundle(capsys):
    objects = generate(capsys)
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        for hook in by_kind(objects, kind)["webhooks"]:
            assert "caBundle" not in hook["clientConfig"]  # discovery's to fill
            assert hook["clientConfig"]["service"] == {
                "name": "istiod", "namespace": "istio-system", "port": 443,
                "path": hook["clientConfig"]["service"]["path"]}


def test_rbac_grants_reads_and_only_named_webhook_writes(capsys):
    role = by_kind(generate(capsys), "ClusterRole")
    writes = [r for r in role["rules"] if set(r["verbs"]) - {"get", "list", "watch"}]
    for rule in writes:
        assert rule.get("resourceNames") or rule["resources"] in (
            ["events"], ["tokenreviews"], ["configmaps"]) or all(
            resource.endswith("/status") for resource in rule["resources"]), rule
    (status,) = [r for r in writes if r["apiGroups"] == ["gateway.networking.k8s.io"]]
    assert set(status["verbs"]) == {"update", "patch"}
    assert {"gateways/status", "httproutes/status", "gatewayclasses/status"} <= set(
        status["resources"])


def test_rbac_lets_discovery_hold_its_leases_in_its_namespace_only(capsys):
    objects = generate(capsys)
    assert not [r for r in by_kind(objects, "ClusterRole")["rules"]
                if "coordination.k8s.io" in r["apiGroups"]]
    leases = [r for r in by_kind(objects, "Role")["rules"]
              if r["apiGroups"] == ["coordination.k8s.io"]]
    assert {verb for r in leases for verb in r["verbs"]} == {"get", "create", "update"}
    assert [r.get("resourceNames") for r in leases if "update" in r["verbs"]] == [
        ["istio-gateway-status-leader", "istio-namespace-controller-election"]]
    container = by_kind(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {
        "apiVersion": "v1", "fieldPath": "metadata.name"}}} in container["env"]


def test_minimal_profile_has_no_webhooks(capsys):
    objects = generate(capsys, "--profile", "minimal")
    kinds = {o["kind"] for o in objects}
    assert not kinds & {"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"}
    container = by_kind(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert "--webhook-address" not in container["args"]
    assert "https-webhook" not in {p["name"] for p in by_kind(objects, "Service")["spec"][
        "ports"]}


def test_set_changes_namespace_replicas_cni_and_mesh_config(capsys):
    objects = generate(capsys, "--set", "namespace=mesh", "--set",
                       "components.discovery.replicas=2", "--set",
                       "components.cni.enabled=true", "--set", "components.crds.enabled=false",
                       "--set", "meshConfig.defaultConfig.holdApplicationUntilProxyStarts=true",
                       "--set", "meshConfig.trustDomain=example.org")
    assert "CustomResourceDefinition" not in {o["kind"] for o in objects}
    assert by_kind(objects, "Namespace")["metadata"]["name"] == "mesh"
    assert by_kind(objects, "Deployment")["spec"]["replicas"] == 2
    assert by_kind(objects, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    daemonset = by_kind(objects, "DaemonSet")
    assert daemonset["metadata"]["namespace"] == "mesh"
    configmaps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
    mesh = yaml.safe_load(configmaps["istio"]["data"]["mesh"])
    assert mesh["trustDomain"] == "example.org"
    assert mesh["defaultConfig"] == {"discoveryAddress": "istiod.mesh.svc:15012",
                                     "holdApplicationUntilProxyStarts": True}
    pilotfish = yaml.safe_load(configmaps["pilotfish"]["data"]["pilotfish.yaml"])
    assert pilotfish["injection"]["pilot"]["cni"]["enabled"] is True


@pytest.mark.parametrize(("assignment", "message"), [
    ("components.cni.enable=true", "--set components.cni.enable: unknown key"),
    ("components.cni.enabled=yes", "--set components.cni.enabled=yes: expected true or false"),
    ("components.discovery.replicas=two",
     "--set components.discovery.replicas=two: expected a whole number"),
    ("hub", "--set hub: expected KEY=VALUE"),
])
def test_set_errors_name_the_key(capsys, assignment: str, message: str):
    assert main(["manifest", "generate", "--set", assignment]) == 2
    assert message in capsys.readouterr().err


def test_json_output_is_a_list(capsys):
    assert main(["manifest", "generate", "-o", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["kind"] == "List"
    assert len(listed["items"]) == len(manifests.generate(manifests.values()))


@pytest.mark.corpus
def test_vendored_crds_equal_the_corpus(corpus: Path):
    shared = corpus.parent
    assert (CRDS / "istio.gen.yaml").read_bytes() == \
        (shared / "istio" / "crds" / "crd-all.gen.yaml").read_bytes()
    standard = shared / "gateway-api" / "config" / "crd" / "standard"
    listed = yaml.safe_load((shared / "gateway-api" / "config" / "crd" /
                             "kustomization.yaml").read_text())["resources"]
    crd_files = [Path(p).name for p in listed if "_vap_" not in p]
    assert sorted(p.name for p in CRDS.glob("gateway.networking.k8s.io_*.yaml")) == \
        sorted(crd_files)
    for name in crd_files:
        assert (CRDS / name).read_bytes() == (standard / name).read_bytes(), name


@pytest.mark.parametrize("profile", list(manifests.PROFILES))
def test_every_manifest_passes_the_two_newest_kubernetes_schemas(profile: str):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    from kubernetes_validate import utils

    versions = sorted(set(utils.all_versions()), key=lambda v: tuple(map(int, v.split("."))))
    vals = manifests.values(profile, ["components.cni.enabled=true"])
    for version in versions[-2:]:
        for obj in manifests.generate(vals):
            kubernetes_validate.validate(obj, version, strict=True)  # raises naming the field


def test_every_install_command_in_the_docs_parses_and_every_manifest_one_runs(capsys):
    import shlex

    text = (ROOT / "docs" / "kubernetes.md").read_text()
    section = text[text.index("## Install"):text.index("## Reading config from a cluster")]
    commands = []
    for line in section.splitlines():
        command = line.removeprefix("$ ")
        words = shlex.split(command) if command.startswith("pilotfish ") else []
        if words[:1] == ["pilotfish"] and not words[1].endswith(":"):  # not an error line
            commands.append(words[1:words.index(">")] if ">" in words else words[1:])
    assert len(commands) >= 9
    for argv in commands:
        args = build_parser(argv).parse_args(argv)
        if args.command == "manifest" and "components.cni.enable=true" not in argv:
            assert main(argv) == 0, argv
    capsys.readouterr()
