"""Istio's bookinfo samples, unchanged, through discovery into real Envoy: zero NACKs.

The platform manifests hold Deployments; pilotfish reads Pods (the file source has no
controller that would create them), so each Deployment's template becomes one Pod here.
Every networking sample is then applied on its own, and a gateway and a sidecar must ACK
everything it produces.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pilotfish.testing.mesh import LocalMesh, Proxy
from pilotfish.testing.processes import http, wait_until

pytestmark = [pytest.mark.corpus, pytest.mark.envoy]


def pods_from_deployments(manifest: Path) -> str:
    docs = []
    for index, doc in enumerate(d for d in yaml.safe_load_all(manifest.read_text()) if d):
        if doc["kind"] == "Service":
            docs.append(doc)
        elif doc["kind"] == "Deployment":
            template = doc["spec"]["template"]
            docs.append({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": doc["metadata"]["name"] + "-0",
                             "labels": template["metadata"]["labels"]},
                "spec": template["spec"],
                "status": {"podIP": f"127.0.40.{index + 1}"},
            })
    return yaml.safe_dump_all(docs)


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


@pytest.fixture(scope="module")
def bookinfo(corpus: Path, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[tuple[LocalMesh, list[Proxy]]]:
    # The samples' gateways listen on 8080 and 80, as written.
    busy = [p for p in (80, 8080) if not port_free(p)]
    assert not busy, f"ports {busy} are in use; the bookinfo gateways bind them"
    mesh = LocalMesh(tmp_path_factory.mktemp("bookinfo"))
    mesh.write("bookinfo.yaml", pods_from_deployments(
        corpus / "bookinfo" / "platform" / "kube" / "bookinfo.yaml"))
    try:
        mesh.start_discovery()
        proxies = [
            mesh.start_proxy("istio-ingressgateway", "istio-system",
                             labels={"istio": "ingressgateway"}),
            mesh.start_proxy("productpage-v1-0", "default", proxy_type="sidecar",
                             ip="127.0.40.99", labels={"app": "productpage", "version": "v1"},
                             xds_mode="sotw"),
        ]
        yield mesh, proxies
    finally:
        mesh.stop()


SAMPLES = sorted(
    p.name for p in (Path(__file__).resolve().parents[3] / "shared" / "corpus" / "istio" /
                     "bookinfo" / "networking").glob("*.yaml")
)


@pytest.mark.parametrize("sample", SAMPLES)
def test_sample_is_acked_by_envoy(bookinfo, corpus: Path, sample: str):
    mesh, proxies = bookinfo
    before = http(f"{mesh.debug}/debug/push_status").json()["pushes"]
    mesh.write("sample.yaml", (corpus / "bookinfo" / "networking" / sample).read_text())
    wait_until(lambda: http(f"{mesh.debug}/debug/push_status").json()["pushes"] > before, 5,
               what="the sample to be pushed")
    errors = [e for e in http(f"{mesh.debug}/debug/config_errors").json()
              if e["severity"] == "error"]
    assert errors == [], errors
    for proxy in proxies:
        proxy_id = f"{proxy.name}.{proxy.namespace}"
        wait_until(lambda proxy=proxy, proxy_id=proxy_id: answered(mesh, proxy, proxy_id), 10,
                   what=f"{proxy_id} to ACK the sample")
        item = next(i for i in mesh.syncz() if i["proxy"] == proxy_id)
        nacks = {t: r["lastError"] for t, r in item["resources"].items() if r["nacks"]}
        assert nacks == {}, nacks


def waiting_for_workload_certificates(proxy: Proxy) -> bool:
    """Clusters with ISTIO_MUTUAL wait (warm) until the agent serves the workload
    certificate over SDS; certificate serving arrives with the CA. Envoy accepted them."""
    warming = [
        entry["cluster"] for section in proxy.config_dump()["configs"]
        for entry in section.get("dynamic_warming_clusters", [])
    ]
    return bool(warming) and all(
        "sds-grpc" in str(c.get("transport_socket", "")) for c in warming
    )


def answered(mesh: LocalMesh, proxy: Proxy, proxy_id: str) -> bool:
    for item in mesh.syncz():
        if item["proxy"] != proxy_id:
            continue
        states = item["resources"]
        if any(r["nacks"] for r in states.values()):
            return True  # a NACK is an answer too: the assertion reports it
        pending = [t for t, r in states.items() if r["status"] != "SYNCED"]
        if not pending:
            return True
        return pending == ["type.googleapis.com/envoy.config.cluster.v3.Cluster"] and (
            waiting_for_workload_certificates(proxy))
    return False
