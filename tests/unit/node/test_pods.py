"""What the node runs for a container: known images, the proxy image, secret volumes."""

from __future__ import annotations

import base64

from pilotfish.core.objects import ConfigObject
from pilotfish.node import pods


def pod(spec: dict[str, object], **annotations: str) -> ConfigObject:
    body = {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "shop", "annotations": annotations},
            "spec": spec}
    return ConfigObject("v1", "Pod", "web-1", "shop", body)


def test_image_names_drop_registry_path_tag_and_digest():
    assert pods.image_name("registry.k8s.io/gateway-api/conformance/echo-basic:v0.1.0") == \
        "echo-basic"
    assert pods.image_name("echo-basic@sha256:abc") == "echo-basic"
    assert pods.image_name("docker.io/istio/proxyv2:1.30.0") == "proxyv2"


def test_the_echo_basic_image_runs_pilotfish_echo_with_the_downward_api():
    spec = {"containers": [{
        "name": "echo", "image": "registry.k8s.io/gateway-api/conformance/echo-basic:v1",
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "NAMESPACE",
                 "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
        "args": ["--extra"]}]}
    (container,) = pods.containers(pod(spec), "10.0.0.2", python="/venv/bin/python")
    assert container.argv == ("/venv/bin/python", "-m", "pilotfish.demo.echo_basic", "--extra")
    assert container.env["POD_NAME"] == "web-1" and container.env["NAMESPACE"] == "shop"
    assert container.proxy == ""


def test_a_command_wins_over_the_image_and_unknown_images_without_one_do_not_run():
    spec = {"containers": [
        {"name": "a", "image": "echo-basic", "command": ["sleep", "1"]},
        {"name": "b", "image": "example/unknown:1"},
        {"name": "c", "image": "coredns/coredns:1", "args": ["-conf", "/root/Corefile"]}]}
    assert [c.argv for c in pods.containers(pod(spec), "10.0.0.2")] == [("sleep", "1")]


def test_the_proxy_image_as_router_is_the_proxy_not_an_app():
    router = {"name": "istio-proxy", "image": "istio/proxyv2", "args": ["proxy", "router"]}
    sidecar = {"name": "istio-proxy", "image": "istio/proxyv2", "args": ["proxy", "sidecar"]}
    assert pods.proxy_role(router) == "router" and pods.proxy_role(sidecar) == ""
    assert pods.router_container(pod({"containers": [router]}))


def test_secret_volumes_become_files_and_their_mount_paths_are_rewritten():
    spec = {"volumes": [{"name": "certs", "secret": {
                "secretName": "tls", "items": [{"key": "tls.crt", "path": "crt"}]}}],
            "containers": [{
                "name": "app", "command": ["serve", "--cert=/etc/certs/crt"],
                "volumeMounts": [{"name": "certs", "mountPath": "/etc/certs"}],
                "env": [{"name": "TLS_SERVER_CERT", "value": "/etc/certs/crt"},
                        {"name": "OTHER", "value": "/etc/certsmore"}]}]}
    obj = pod(spec)
    assert pods.secret_volumes(obj) == {
        "certs": pods.VolumeSource("Secret", "tls", [("tls.crt", "crt")])}
    secret = {"data": {"tls.crt": base64.b64encode(b"CERT").decode(),
                       "tls.key": base64.b64encode(b"KEY").decode()}}
    assert pods.secret_files(secret, [("tls.crt", "crt")]) == {"crt": b"CERT"}
    assert pods.secret_files(secret, []) == {"tls.crt": b"CERT", "tls.key": b"KEY"}
    (container,) = pods.containers(obj, "10.0.0.2", volume_dirs={"certs": "/run/p/certs"})
    assert container.env["TLS_SERVER_CERT"] == "/run/p/certs/crt"
    assert container.env["OTHER"] == "/etc/certsmore"  # not under the mount
    assert container.argv == ("serve", "--cert=/etc/certs/crt")  # only whole arguments


def test_config_map_volumes_hold_data_and_binary_data():
    spec = {"volumes": [{"name": "ca", "configMap": {
        "name": "ca-bundle", "items": [{"key": "ca.crt", "path": "ca"}]}},
        {"name": "crl", "configMap": {"name": "istio-ca-crl", "optional": True}}]}
    assert pods.secret_volumes(pod(spec)) == {
        "ca": pods.VolumeSource("ConfigMap", "ca-bundle", [("ca.crt", "ca")]),
        "crl": pods.VolumeSource("ConfigMap", "istio-ca-crl", optional=True)}
    config_map = {"kind": "ConfigMap", "data": {"ca.crt": "PEM"},
                  "binaryData": {"blob": base64.b64encode(b"\x00").decode()}}
    assert pods.secret_files(config_map, []) == {"ca.crt": b"PEM", "blob": b"\x00"}


def annotated(annotations: dict[str, str]) -> ConfigObject:
    body = {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "shop", "annotations": annotations},
            "spec": {}}
    return ConfigObject("v1", "Pod", "web-1", "shop", body)


def test_tproxy_sidecar_runs_as_root_in_group_1337_with_net_admin_only():
    assert pods.interception_mode(annotated({})) == "REDIRECT"
    assert pods.sidecar_user(annotated({})) == pods.ProxyUser(1337, 1337, ())
    tproxy = annotated({"sidecar.istio.io/interceptionMode": "TPROXY"})
    assert pods.interception_mode(tproxy) == "TPROXY"
    assert pods.sidecar_user(tproxy) == pods.ProxyUser(0, 1337, ("net_admin",))
    # the ProxyConfig annotation says it too; the interceptionMode annotation wins
    config = {"proxy.istio.io/config": "interceptionMode: TPROXY"}
    assert pods.interception_mode(annotated(config)) == "TPROXY"
    assert pods.interception_mode(annotated(
        {**config, "sidecar.istio.io/interceptionMode": "REDIRECT"})) == "REDIRECT"


def test_exec_argv_keeps_only_the_capabilities_asked_for():
    from pilotfish.node import netns

    assert netns.exec_argv("pf-a", ["agent"], 1337, 1337) == [
        "ip", "netns", "exec", "pf-a", "setpriv", "--reuid=1337", "--regid=1337",
        "--clear-groups", "--", "agent"]
    assert netns.exec_argv("pf-a", ["agent"], 0, 1337, ("net_admin",))[5:] == [
        "--reuid=0", "--regid=1337", "--clear-groups", "--inh-caps=-all,+net_admin",
        "--bounding-set=-all,+net_admin", "--", "agent"]


def labelled(labels: dict[str, str], annotations: dict[str, str] | None = None) -> ConfigObject:
    body = {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "shop", "labels": labels,
                         "annotations": annotations or {}}, "spec": {}}
    return ConfigObject("v1", "Pod", "web-1", "shop", body)


def test_the_node_injects_the_pods_the_injection_webhooks_would_select():
    enabled = {"istio-injection": "enabled"}
    assert pods.wants_sidecar(labelled({}), enabled)
    assert pods.wants_sidecar(labelled({}), {"istio.io/rev": "default"})
    assert not pods.wants_sidecar(labelled({}), {"istio.io/rev": "canary"})
    assert not pods.wants_sidecar(labelled({}), {})
    assert not pods.wants_sidecar(labelled({}), {"istio-injection": "disabled"})
    assert pods.wants_sidecar(labelled({"sidecar.istio.io/inject": "true"}), {})
    assert not pods.wants_sidecar(labelled({"sidecar.istio.io/inject": "false"}), enabled)
    # the label wins over the annotation; an annotation alone counts on the node
    assert not pods.wants_sidecar(labelled({"sidecar.istio.io/inject": "false"},
                                           {"sidecar.istio.io/inject": "true"}), enabled)
    assert pods.wants_sidecar(labelled({}, {"sidecar.istio.io/inject": "true"}), {})


def test_an_injected_sidecar_is_the_nodes_to_run_not_an_app_container():
    app = {"name": "app", "command": ["serve"], "ports": [{"containerPort": 8080}]}
    proxy = {"name": "istio-proxy", "image": "localhost/pilotfish:1", "args": ["agent"],
             "ports": [{"name": "http-envoy-prom", "containerPort": 15090}]}
    status = {"sidecar.istio.io/status": "{}"}
    injected = pod({"containers": [app, proxy]}, **status)
    assert pods.injected(injected)
    assert [c.name for c in pods.containers(injected, "10.0.0.2")] == ["app"]
    assert pods.container_ports(injected) == [("", 8080)]
    # a native sidecar (an init container) counts too; a container of that name alone not
    native = pod({"initContainers": [{**proxy, "restartPolicy": "Always"}],
                  "containers": [app]}, **status)
    assert pods.injected(native)
    named_so = pod({"containers": [app, proxy]})
    assert not pods.injected(named_so)
    assert pods.container_ports(named_so) == [("", 8080), ("http-envoy-prom", 15090)]


def test_a_gateway_templates_injected_proxy_is_a_router_to_run_not_a_sidecar():
    proxy = {"name": "istio-proxy", "image": "localhost/pilotfish:1",
             "args": ["--log-level", "info", "agent", "--type", "router"]}
    gateway = pod({"containers": [proxy]}, **{"sidecar.istio.io/status": "{}"})
    assert not pods.injected(gateway) and pods.router_container(gateway)
    assert [c.proxy for c in pods.containers(gateway, "10.0.0.2")] == ["router"]


def test_a_proxy_config_enabling_hbone_labels_the_sidecars_pod_as_the_injector_does():
    enabled = {"proxy.istio.io/config": "proxyMetadata: {ISTIO_META_ENABLE_HBONE: 'true'}"}
    assert pods.hbone_labels(labelled({"app": "web"}, enabled)) == {
        "networking.istio.io/tunnel": "http"}
    assert pods.hbone_labels(labelled({"networking.istio.io/tunnel": "h2"}, enabled)) == {
        "networking.istio.io/tunnel": "h2"}
    off = {"proxy.istio.io/config": "proxyMetadata: {ISTIO_META_ENABLE_HBONE: 'false'}"}
    assert pods.hbone_labels(labelled({"app": "web"}, off)) == {}
    assert pods.hbone_labels(labelled({"app": "web"})) == {}
    assert pods.hbone_labels(labelled({}, {"proxy.istio.io/config": "[not, a, map]"})) == {}
