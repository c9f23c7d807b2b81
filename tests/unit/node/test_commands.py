"""``pilotfish up``'s argument checks, which run before it makes anything."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from pilotfish.node import commands


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    commands.add_up_arguments(parser)
    return parser.parse_args(list(argv))


def test_up_refuses_a_mesh_config_proxy_no_backend_has(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(commands.os, "geteuid", lambda: 0)
    mesh = tmp_path / "pilotfish.yaml"
    mesh.write_text("proxy: nginx\n")
    args = parse("--config-dir", str(tmp_path), "--mesh-config", str(mesh),
                 "--state-dir", str(tmp_path / "state"))
    assert commands.up_main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pilotfish up: {mesh}: proxy: 'nginx': no such proxy backend; "
                          "installed in pilotfish.proxies: envoy (from pilotfish ")
    assert not (tmp_path / "state").exists()
    # the flag overrides the file; a wrong flag is named as the flag
    assert commands.up_main(parse("--config-dir", str(tmp_path), "--proxy", "nope")) == 2
    assert "pilotfish up: --proxy nope: no such proxy backend" in capsys.readouterr().err


def test_up_takes_its_objects_from_files_or_a_cluster_not_both(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(commands.os, "geteuid", lambda: 0)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    state = ("--state-dir", str(tmp_path / "state"))
    for argv, said in [
        (("--kubeconfig", str(kubeconfig), "--config-dir", str(tmp_path)),
         "pilotfish up: --kubeconfig and --config-dir: the objects come from one or the other"),
        (("--context", "prod"), "pilotfish up: --context needs --kubeconfig"),
        (("--kubeconfig", str(tmp_path / "missing")),
         f"pilotfish up: --kubeconfig {tmp_path / 'missing'}: no such file"),
    ]:
        assert commands.up_main(parse(*argv, *state)) == 2
        assert capsys.readouterr().err.strip() == said
    assert not (tmp_path / "state").exists()
