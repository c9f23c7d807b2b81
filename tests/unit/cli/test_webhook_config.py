"""``pilotfish webhook-config``: the two webhook configurations, with discovery's root as
their CA bundle, for the Service or a URL."""

from __future__ import annotations

import base64
from pathlib import Path

import yaml

from pilotfish.cli.main import main
from pilotfish.testing.certs import ca_signed


def test_the_configurations_carry_the_root_and_point_at_istiod(tmp_path: Path, capsys):
    root, _, _ = ca_signed("istiod.istio-system.svc")
    (tmp_path / "root-cert.pem").write_bytes(root)
    assert main(["webhook-config", "--ca-cert", str(tmp_path / "root-cert.pem")]) == 0
    mutating, validating = yaml.safe_load_all(capsys.readouterr().out)
    assert (mutating["kind"], validating["kind"]) == ("MutatingWebhookConfiguration",
                                                      "ValidatingWebhookConfiguration")
    for hook in [*mutating["webhooks"], *validating["webhooks"]]:
        assert base64.b64decode(hook["clientConfig"]["caBundle"]) == root
        assert hook["clientConfig"]["service"]["name"] == "istiod"
    assert {h["clientConfig"]["service"]["path"] for h in mutating["webhooks"]} == {"/inject"}


def test_a_url_and_a_revision(tmp_path: Path, capsys):
    root, _, _ = ca_signed("x")
    (tmp_path / "root.pem").write_bytes(root)
    assert main(["webhook-config", "--ca-cert", str(tmp_path / "root.pem"), "--url",
                 "https://10.0.0.5:15017", "--revision", "canary"]) == 0
    mutating, validating = yaml.safe_load_all(capsys.readouterr().out)
    assert mutating["metadata"]["name"] == "istio-sidecar-injector-canary"
    assert mutating["webhooks"][0]["clientConfig"]["url"] == "https://10.0.0.5:15017/inject"
    assert validating["webhooks"][0]["objectSelector"] == {"matchExpressions": [
        {"key": "istio.io/rev", "operator": "In", "values": ["canary"]}]}


def test_what_is_not_a_certificate_or_https_is_refused(tmp_path: Path, capsys):
    (tmp_path / "x.pem").write_text("hello")
    assert main(["webhook-config", "--ca-cert", str(tmp_path / "x.pem")]) == 2
    assert "expected a PEM certificate" in capsys.readouterr().err
    assert main(["webhook-config", "--ca-cert", str(tmp_path / "missing.pem")]) == 2
    assert "cannot read" in capsys.readouterr().err
    root, _, _ = ca_signed("x")
    (tmp_path / "root.pem").write_bytes(root)
    assert main(["webhook-config", "--ca-cert", str(tmp_path / "root.pem"), "--url",
                 "http://10.0.0.5:15017"]) == 2
    assert "over https://" in capsys.readouterr().err
