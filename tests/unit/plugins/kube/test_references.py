"""Which Secrets and ConfigMaps config refers to (the only ones the Kubernetes source
keeps), and which version of a custom kind a CRD is read in."""

from __future__ import annotations

from pilotfish.core.objects import KindInfo
from pilotfish.core.yamlload import load_text
from pilotfish.plugins.kube.references import wanted
from pilotfish.plugins.kube.resources import custom_kinds, from_crd
from pilotfish.testing.kube.crds import crd, plural

CONFIG = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: edge}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: SIMPLE, credentialName: shop-cert}
  - port: {number: 8443, name: https-2, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: MUTUAL, credentialName: "kubernetes://other-cert",
          caCertCredentialName: client-ca}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db, namespace: shop}
spec:
  host: db
  trafficPolicy:
    portLevelSettings:
    - port: {number: 5432}
      tls: {mode: MUTUAL, credentialName: db-client}
  subsets:
  - name: v2
    labels: {version: v2}
    trafficPolicy: {tls: {mode: SIMPLE, credentialName: db-v2}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: edge}
spec:
  gatewayClassName: istio
  infrastructure: {parametersRef: {group: "", kind: ConfigMap, name: gw-options}}
  listeners:
  - name: https
    port: 443
    protocol: HTTPS
    tls:
      certificateRefs: [{name: web-cert}, {name: shared, namespace: certs},
                        {group: example.com, kind: Vault, name: not-a-secret}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {name: db-tls, namespace: shop}
spec:
  targetRefs: [{group: "", kind: Service, name: db}]
  validation: {hostname: db.shop, caCertificateRefs: [{group: "", kind: ConfigMap,
                                                       name: db-ca}]}
"""


def test_what_config_refers_to():
    objects, errors = load_text(CONFIG, "refs.yaml")
    assert not errors
    found = wanted(objects, "istio-system")
    secrets, configmaps = found["Secret"], found["ConfigMap"]
    assert secrets.names == {"shop-cert", "shop-cert-cacert", "other-cert",
                             "other-cert-cacert", "client-ca", "client-ca-cacert",
                             "db-client", "db-client-cacert", "db-v2", "db-v2-cacert"}
    assert secrets.exact == {("edge", "web-cert"), ("certs", "shared")}
    assert secrets(("anywhere", "shop-cert")) and not secrets(("edge", "shared"))
    assert configmaps.exact == {("istio-system", "istio"), ("edge", "gw-options"),
                                ("shop", "db-ca")}
    assert wanted([], "mesh-root")["ConfigMap"].exact == {("mesh-root", "istio")}


def test_a_crd_is_read_in_its_storage_version_when_pilotfish_reads_that():
    info = KindInfo("gateway.networking.k8s.io", "TLSRoute", ("v1", "v1alpha2", "v1alpha3"))
    stored_old = crd(info.group, info.kind, ("v1alpha2", "v1"))
    assert from_crd(stored_old, info).version == "v1alpha2"
    unknown_storage = crd(info.group, info.kind, ("v9", "v1alpha3"))
    assert from_crd(unknown_storage, info).version == "v1alpha3"
    assert from_crd(crd(info.group, info.kind, ("v9",)), info) is None
    cluster = from_crd(crd("example.com", "Mesh", ("v1",), namespaced=False),
                       KindInfo("example.com", "Mesh", ("v1",), namespaced=False))
    assert cluster.path() == "/apis/example.com/v1/meshes" and not cluster.namespaced


def test_custom_kinds_are_the_ones_outside_kubernetes_own_groups():
    kinds = [KindInfo("", "Pod", ("v1",)), KindInfo("apps", "Deployment", ("v1",)),
             KindInfo("networking.istio.io", "Sidecar", ("v1",)),
             KindInfo("gateway.networking.k8s.io", "GatewayClass", ("v1",), False)]
    assert [k.kind for k in custom_kinds(kinds)] == ["GatewayClass", "Sidecar"]
    assert [plural(k) for k in ("GatewayClass", "ServiceEntry", "Telemetry", "Sidecar")] == [
        "gatewayclasses", "serviceentries", "telemetries", "sidecars"]
