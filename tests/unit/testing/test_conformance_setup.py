"""What the runner writes for the node: the Applier's preparation of the suite's manifests,
the objects the suite creates in code, and the API server it plays over files."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from pilotfish.testing.conformance import certificates, manifests
from pilotfish.testing.conformance.apiserver import APIServer, NotFound
from pilotfish.testing.conformance.model import PatchOp, ValueFrom

APPLIER = manifests.Applier(usable_addresses=(manifests.Address("10.0.0.250"),),
                            unusable_addresses=(manifests.Address("203.0.113.1"),))


def test_gateways_get_the_class_and_classes_the_controller():
    gateway = APPLIER.prepare({"kind": "Gateway", "metadata": {"name": "g"},
                               "spec": {"gatewayClassName": "{GATEWAY_CLASS_NAME}"}})
    assert gateway["spec"]["gatewayClassName"] == "istio"
    gwc = APPLIER.prepare({"kind": "GatewayClass", "metadata": {"name": "c"},
                           "spec": {"controllerName": "example.com/other"}})
    assert gwc["spec"]["controllerName"] == "istio.io/gateway-controller"


def test_address_placeholders_become_the_suites_addresses_in_go_order():
    gateway = APPLIER.prepare({"kind": "Gateway", "metadata": {"name": "g"}, "spec": {
        "addresses": [{"type": "test/fake-invalid-type", "value": "fake"},
                      {"value": "PLACEHOLDER_UNUSABLE_ADDRS"},
                      {"value": "PLACEHOLDER_USABLE_ADDRS"}]}})
    assert gateway["spec"]["addresses"] == [
        {"type": "test/fake-invalid-type", "value": "fake"},
        {"type": "IPAddress", "value": "203.0.113.1"},
        {"type": "IPAddress", "value": "10.0.0.250"}]
    # Go overlays whenever addresses are given: a literal address without a placeholder
    # is dropped (GatewayOptionalAddressValue's Gateway ends up with none)
    literal = APPLIER.prepare({"kind": "Gateway", "metadata": {"name": "g"},
                               "spec": {"addresses": [{"type": "IPAddress"}]}})
    assert literal["spec"]["addresses"] == []


def _sans(secret: dict[str, object]) -> list[object]:
    data = secret["data"]
    assert isinstance(data, dict)
    cert = x509.load_pem_x509_certificate(base64.b64decode(data["tls.crt"]))
    return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)


def test_the_setup_objects_are_the_go_suites():
    objects = certificates.setup_objects()
    names = [(o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]) for o in objects]
    assert ("Secret", "gateway-conformance-infra", "tls-validity-checks-certificate") in names
    assert ("ConfigMap", "gateway-conformance-infra", "tls-checks-ca-certificate") in names
    assert len(names) == len(set(names)) == 14
    by_name = {o["metadata"]["name"] + "/" + o["metadata"]["namespace"]: o for o in objects}
    validity = _sans(by_name["tls-validity-checks-certificate/gateway-conformance-infra"])
    # "*" is no DNS name for Go: it becomes a URI SAN
    assert x509.UniformResourceIdentifier("*") in validity
    assert x509.DNSName("*.wildcard.org") in validity
    checks = _sans(by_name["tls-checks-certificate/gateway-conformance-infra"])
    assert x509.UniformResourceIdentifier("spiffe://abc.example.com/test-identity") in checks
    # the CA in the ConfigMap signed the certificate of the same set
    ca = x509.load_pem_x509_certificate(
        by_name["tls-checks-ca-certificate/gateway-conformance-infra"]["data"]["ca.crt"].encode())
    cert = x509.load_pem_x509_certificate(base64.b64decode(
        by_name["tls-checks-certificate/gateway-conformance-infra"]["data"]["tls.crt"]))
    cert.verify_directly_issued_by(ca)


def test_the_api_server_keeps_one_file_per_object_and_counts_generations(tmp_path: Path):
    now = [1_800_000_000.7]
    api = APIServer(tmp_path, clock=lambda: now[0])
    route = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
             "metadata": {"name": "r", "namespace": "ns"}, "spec": {"hostnames": ["a"]}}
    [key] = api.apply([route], "case")
    written = yaml.safe_load(api.files[key].read_text())
    assert written["metadata"]["generation"] == 1
    assert written["metadata"]["creationTimestamp"] == "2027-01-15T08:00:00Z"
    now[0] += 10
    api.patch(key, (PatchOp("add", "/spec/hostnames/-", "b"),))
    after = api.get(key)
    assert after["spec"]["hostnames"] == ["a", "b"]
    assert after["metadata"]["generation"] == 2
    assert after["metadata"]["creationTimestamp"] == "2027-01-15T08:00:00Z"
    api.update({**after, "metadata": {**after["metadata"], "labels": {"x": "y"}}})
    assert api.get(key)["metadata"]["generation"] == 2  # metadata alone: no new generation
    assert not list(tmp_path.rglob(".*.tmp"))
    assert api.delete(key) and not api.files.get(key)
    assert not list(tmp_path.rglob("*.yaml"))
    with pytest.raises(NotFound):
        api.get(key)


def test_values_from_live_objects_and_patches_of_lists(tmp_path: Path):
    api = APIServer(tmp_path)
    api.create({"kind": "ConfigMap", "metadata": {"name": "ca", "namespace": "ns"},
                "data": {"ca.crt": "PEM"}}, "base")
    assert api.resolve({"data": {"ca.crt": ValueFrom("ConfigMap", ("ns", "ca"),
                                                     "/data/ca.crt")}}) == {
        "data": {"ca.crt": "PEM"}}
    key = api.create({"kind": "Gateway", "metadata": {"name": "g", "namespace": "ns"},
                      "spec": {"addresses": [{"value": "a"}, {"value": "b"}]}}, "case")
    api.patch(key, (PatchOp("remove", "/spec/addresses/0"),))
    assert api.get(key)["spec"]["addresses"] == [{"value": "b"}]
    with pytest.raises(KeyError):
        api.patch(key, (PatchOp("replace", "/spec/missing", 1),))


def test_a_name_too_long_for_a_file_name_is_cut_and_hashed(tmp_path: Path):
    # GatewayNameMaximumLength's Gateway has a 253-character name
    api = APIServer(tmp_path)
    key = api.create({"kind": "Gateway", "metadata": {"name": "g" * 253, "namespace": "ns"}},
                     "case")
    assert len(api.files[key].name) < 200 and api.files[key].is_file()
    other = api.create({"kind": "Gateway", "metadata": {"name": "g" * 252 + "h",
                                                        "namespace": "ns"}}, "case")
    assert api.files[other] != api.files[key]
