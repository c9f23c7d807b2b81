"""The WDS modules generated from ztunnel's protos keep its wire names (that they are current:
tests/unit/test_generated_protos.py)."""

from __future__ import annotations

from pilotfish.core.ambient import authorization_pb2, workload_pb2


def test_type_urls_and_field_numbers_are_ztunnels():
    assert workload_pb2.Address.DESCRIPTOR.full_name == "istio.workload.Address"
    assert authorization_pb2.Authorization.DESCRIPTOR.full_name == "istio.security.Authorization"
    workload = workload_pb2.Workload.DESCRIPTOR.fields_by_name
    assert (workload["uid"].number, workload["addresses"].number, workload["services"].number,
            workload["tunnel_protocol"].number) == (20, 3, 22, 5)
    match = authorization_pb2.Match.DESCRIPTOR.fields_by_name
    assert (match["principals"].number, match["destination_ports"].number,
            match["service_accounts"].number) == (3, 9, 11)
    # authorization.proto's Extension is workload.proto's, imported under its installed name.
    extension = authorization_pb2.Authorization.DESCRIPTOR.fields_by_name["extensions"]
    assert extension.message_type.full_name == "istio.workload.Extension"


def test_address_round_trips():
    address = workload_pb2.Address(workload=workload_pb2.Workload(
        uid="Kubernetes//Pod/default/a", addresses=[bytes([10, 0, 0, 5])],
        tunnel_protocol=workload_pb2.HBONE,
        services={"default/a.default.svc.cluster.local": workload_pb2.PortList(
            ports=[workload_pb2.Port(service_port=80, target_port=8080)])}))
    assert workload_pb2.Address.FromString(address.SerializeToString()) == address
