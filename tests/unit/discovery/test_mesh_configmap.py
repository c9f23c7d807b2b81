"""Istio's mesh config in the ``istio`` ConfigMap of the root namespace (from any source:
a cluster, or a file) overrides the mesh config file's ``mesh:`` field by field; a change
to it is a full push; one that cannot be read is reported and the last good one stays."""

from __future__ import annotations

from pilotfish.core import meshconfig
from pilotfish.core.plugins import Plugins
from pilotfish.core.push import PushRequest
from pilotfish.core.yamlload import load_text
from pilotfish.discovery.app import Discovery, DiscoveryOptions


def configmap(mesh: str, namespace: str = "istio-system") -> str:
    indented = "".join(f"    {line}\n" for line in mesh.splitlines())
    return (f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: istio, namespace: "
            f"{namespace}}}\ndata:\n  mesh: |\n{indented}")


def discovery() -> Discovery:
    config = meshconfig.from_dict({"mesh": {"connectTimeout": "3s"}})
    return Discovery(config, Plugins.from_config(config), DiscoveryOptions(
        debug_address=None))


def write(found: Discovery, text: str) -> None:
    objects, errors = load_text(text, "mesh.yaml")
    assert not errors
    found.store.replace("mesh.yaml", objects)


def test_the_configmap_overrides_the_files_mesh_settings_and_pushes_everything():
    found = discovery()
    write(found, configmap("outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n"
                           "enablePrometheusMerge: true\n"))
    pending = found.debouncer.pending
    assert pending is not None and pending.changed is None  # every generator reads it
    found.rebuild(PushRequest.full("test", 0.0))
    mesh = found.state.push.mesh
    assert mesh.outbound_traffic_policy == "REGISTRY_ONLY"
    assert mesh.connect_timeout == 3.0  # pilotfish.yaml's, where the ConfigMap says nothing

    found.store.remove("mesh.yaml")
    found.rebuild(PushRequest.full("test", 0.0))
    assert found.state.push.mesh.outbound_traffic_policy == "ALLOW_ANY"


def test_a_configmap_that_cannot_be_read_keeps_the_last_good_settings_and_says_why():
    found = discovery()
    write(found, configmap("outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n"))
    found.rebuild(PushRequest.full("test", 0.0))
    write(found, configmap("outboundTrafficPolicy: {mode: SOMETIMES}\n"))
    found.rebuild(PushRequest.full("test", 0.0))
    assert found.state.push.mesh.outbound_traffic_policy == "REGISTRY_ONLY"
    (problem,) = [e for e in found.config_errors() if e.field == "data.mesh"]
    assert str(problem) == ("mesh.yaml:1: ConfigMap istio-system/istio: data.mesh: "
                            "outboundTrafficPolicy.mode: Unsupported value 'SOMETIMES'; "
                            "expected ALLOW_ANY or REGISTRY_ONLY")
    write(found, configmap("outboundTrafficPolicy: {mode: ALLOW_ANY}\n"))
    found.rebuild(PushRequest.full("test", 0.0))
    assert found.state.push.mesh.outbound_traffic_policy == "ALLOW_ANY"
    assert not [e for e in found.config_errors() if e.field == "data.mesh"]


def test_a_configmap_of_another_namespace_is_not_the_mesh_config():
    found = discovery()
    write(found, configmap("outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n", "default"))
    found.rebuild(PushRequest.full("test", 0.0))
    assert found.state.push.mesh.outbound_traffic_policy == "ALLOW_ANY"
