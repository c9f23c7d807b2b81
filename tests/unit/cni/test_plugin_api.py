"""pilotfish-cni reading a pod from the API server (a kubelet's runtime passes only its name
and namespace, in CNI_ARGS), as Istio's CNI plugin does; against the test kit's fake API
server."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pilotfish.cni import plugin, protocol
from pilotfish.cni.protocol import CniError, CniRequest
from pilotfish.testing.kube import FakeKubeApi, service_account
from pilotfish.testing.kube.tokens import API_AUDIENCE

INJECTED = {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default",
                         "annotations": {"sidecar.istio.io/status": "{}"}},
            "spec": {"containers": [{"name": "app"}, {"name": "istio-proxy"}]}}


def request(command: str = "ADD", kubeconfig: Any = None, **args: str) -> CniRequest:
    config: dict[str, Any] = {"cniVersion": "1.0.0", "name": "net", "type": "pilotfish-cni",
                              "exclude_namespaces": ["kube-system"]}
    if kubeconfig is not None:
        config["kubernetes"] = {"kubeconfig": kubeconfig}
    return CniRequest(command, "c1", "/var/run/netns/x", "eth0", args, (), config)


def test_the_pod_is_read_from_the_api_server(api: FakeKubeApi):
    api.seed(INJECTED)
    facts = plugin.pod_facts(request(kubeconfig=str(api.kubeconfig), K8S_POD_NAME="web",
                                     K8S_POD_NAMESPACE="default"))
    assert facts is not None and facts.key == "default/web" and facts.sidecar


def test_a_pod_not_there_yet_is_waited_for(api: FakeKubeApi, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(plugin, "API_RETRY", 0.05)
    later = threading.Timer(0.3, api.seed, (INJECTED,))
    later.start()
    started = time.monotonic()
    facts = plugin.pod_facts(request(kubeconfig=str(api.kubeconfig), K8S_POD_NAME="web",
                                     K8S_POD_NAMESPACE="default"))
    later.join()
    assert facts is not None and facts.sidecar and time.monotonic() - started >= 0.3


def test_what_cannot_be_read_is_named(api: FakeKubeApi, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(plugin, "API_WAIT", 0.2)
    monkeypatch.setattr(plugin, "API_RETRY", 0.05)
    kubeconfig = str(api.kubeconfig)
    for req, code, message in [
        (request(kubeconfig=kubeconfig, K8S_POD_NAMESPACE="default"), protocol.INVALID_CONFIG,
         "CNI_ARGS: K8S_POD_NAME and K8S_POD_NAMESPACE are needed"),
        (request(kubeconfig=3, K8S_POD_NAME="web", K8S_POD_NAMESPACE="default"),
         protocol.INVALID_CONFIG, "network config: kubernetes.kubeconfig: expected the path"),
        (request(kubeconfig=str(tmp_path / "none"), K8S_POD_NAME="web",
                 K8S_POD_NAMESPACE="default"), protocol.INVALID_CONFIG,
         f"network config: kubernetes.kubeconfig: --kubeconfig {tmp_path / 'none'}"),
        (request(kubeconfig=kubeconfig, K8S_POD_NAME="gone", K8S_POD_NAMESPACE="default"),
         protocol.TRY_AGAIN_LATER, "pod default/gone: the API server: "),
    ]:
        with pytest.raises(CniError) as caught:
            plugin.pod_facts(req)
        assert caught.value.code == code and caught.value.msg.startswith(message), \
            caught.value.msg


def test_an_excluded_namespace_and_del_never_ask(tmp_path: Path):
    # the kubeconfig does not exist: asking would fail
    missing = str(tmp_path / "none")
    assert plugin.pod_facts(request(kubeconfig=missing, K8S_POD_NAME="p",
                                    K8S_POD_NAMESPACE="kube-system")) is None
    assert plugin.pod_facts(request("DEL", kubeconfig=missing, K8S_POD_NAME="p",
                                    K8S_POD_NAMESPACE="default"), ask_api=False) is None


def test_the_cni_daemonset_chains_the_plugin_with_a_kubeconfig_that_reads_pods(
        api: FakeKubeApi, tmp_path: Path):
    """The DaemonSet's install step (its Python part), run against folders standing in for
    the host's and the pod's: the conflist gains the plugin (once, replacing an older
    entry), and the kubeconfig it writes from the pod's service account reads a pod."""
    import json
    import re
    import subprocess
    import sys

    from pilotfish.cli import manifests

    account, conf, run = tmp_path / "sa", tmp_path / "net.d", tmp_path / "run"
    for folder in (account, conf, run):
        folder.mkdir()
    (account / "token").write_text(api.add_token(service_account(
        "istio-system", "istio-cni", audiences=[API_AUDIENCE])))
    (account / "ca.crt").write_bytes(api.ca_pem)
    older = {"type": "pilotfish-cni", "capabilities": {"pilotfishPod": True}}
    (conf / "10-bridge.conflist").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": "k8s", "plugins": [{"type": "bridge"}, older]}))
    script = re.search(r"python3 - <<'EOF'\n(.*?)\nEOF", manifests.CNI_INSTALL, re.S)
    assert script is not None
    code = (script.group(1).replace(f"/host{manifests.CNI_CONF}", str(conf))
            .replace(manifests.CNI_RUN, str(run)).replace(manifests.SA_DIR, str(account)))
    environ = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(api.port)}
    for _ in range(2):  # idempotent
        subprocess.run([sys.executable, "-c", code], env=environ, check=True)
    chained = json.loads((conf / "10-bridge.conflist").read_text())["plugins"]
    assert chained == [{"type": "bridge"}, {"type": "pilotfish-cni", "kubernetes": {
        "kubeconfig": str(run / "kubeconfig")}}]
    api.seed(INJECTED)
    req = request(kubeconfig=str(run / "kubeconfig"), K8S_POD_NAME="web",
                  K8S_POD_NAMESPACE="default")
    assert plugin.pod_facts(req) is not None


def test_the_namespace_labels_come_with_the_pod_so_a_namespace_can_enroll_it(api: FakeKubeApi):
    _, seeded = api.seed({"apiVersion": "v1", "kind": "Namespace",
              "metadata": {"name": "shop", "labels": {"istio.io/dataplane-mode": "ambient"}}},
             {"apiVersion": "v1", "kind": "Pod",
              "metadata": {"name": "web", "namespace": "shop", "uid": "u-web"},
              "spec": {"serviceAccountName": "web", "containers": [{"name": "app"}]}})
    facts = plugin.pod_facts(request(kubeconfig=str(api.kubeconfig), K8S_POD_NAME="web",
                                     K8S_POD_NAMESPACE="shop"))
    assert facts is not None
    assert facts.namespace_labels["istio.io/dataplane-mode"] == "ambient"
    assert (facts.uid, facts.service_account) == (seeded["metadata"]["uid"], "web")
