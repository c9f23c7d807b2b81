"""The CA modules generated from core/security/ca.proto keep Istio's wire names (that they are
current: tests/unit/test_generated_protos.py)."""

from __future__ import annotations

from pilotfish.core.security import ca_pb2, ca_pb2_grpc


def test_wire_names_and_field_numbers_are_istios():
    request = ca_pb2.IstioCertificateRequest.DESCRIPTOR
    assert request.full_name == "istio.v1.auth.IstioCertificateRequest"
    fields = {f.name: (f.number, f.type) for f in request.fields}
    assert fields["csr"][0] == 1 and fields["validity_duration"][0] == 3
    assert fields["metadata"][0] == 4
    assert request.fields_by_name["metadata"].message_type.full_name == "google.protobuf.Struct"
    response = ca_pb2.IstioCertificateResponse.DESCRIPTOR
    assert response.fields_by_name["cert_chain"].number == 1
    service = ca_pb2.DESCRIPTOR.services_by_name["IstioCertificateService"]
    assert service.full_name == "istio.v1.auth.IstioCertificateService"
    assert [m.name for m in service.methods] == ["CreateCertificate"]
    assert hasattr(ca_pb2_grpc, "IstioCertificateServiceStub")


def test_request_round_trips():
    request = ca_pb2.IstioCertificateRequest(csr="PEM", validity_duration=3600)
    request.metadata.update({"CertSigner": "x"})
    assert ca_pb2.IstioCertificateRequest.FromString(request.SerializeToString()) == request
