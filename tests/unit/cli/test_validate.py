"""``pilotfish validate``: files and directories in, one line per problem out."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest

from pilotfish.cli import validate as cli

GOOD = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: shop}
spec:
  hosts: [web]
  http: [{route: [{destination: {host: web}}]}]
"""
BAD = """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict}
spec:
  mtls: {mode: STRICTER}
"""
WARN_ONLY = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web}
spec:
  host: web
  exportto: ["."]
"""


def run(*argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(parser.parse_args(list(argv)), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "good.yaml").write_text(GOOD)
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "bad.yml").write_text(BAD)
    (tmp_path / "notes.txt").write_text("not config")
    return tmp_path


def test_errors_exit_1_with_file_line_object_and_field(tree: Path):
    code, out, err = run(str(tree))
    assert code == 1
    bad = tree / "nested" / "bad.yml"
    assert out.splitlines() == [
        f'{bad}:5: PeerAuthentication default/strict: spec.mtls.mode: Unsupported value: '
        '"STRICTER": supported values: "UNSET", "DISABLE", "PERMISSIVE", "STRICT"',
        f"{bad}:1: warning: PeerAuthentication default/strict: some validation rules were not "
        "checked because the object was invalid; correct the existing errors to complete "
        "validation",
    ]
    assert err == "checked 2 objects in 2 files: 1 errors, 1 warnings\n"


def test_warnings_alone_exit_0(tmp_path: Path):
    path = tmp_path / "dr.yaml"
    path.write_text(WARN_ONLY)
    code, out, _ = run(str(path))  # strict field validation: a typo is an error
    assert code == 1
    assert out == (f'{path}:6: DestinationRule default/web: spec.exportto: unknown '
                   'field "spec.exportto"\n')
    mesh = tmp_path / "pilotfish.yaml"
    mesh.write_text("discovery: {fieldValidation: Warn}\n")
    code, out, _ = run(str(path), "--mesh-config", str(mesh))
    assert code == 0
    assert out == (f'{path}:6: warning: DestinationRule default/web: spec.exportto: unknown '
                   'field "spec.exportto" (ignored)\n')


def test_json_output_is_a_list_of_problems(tree: Path):
    code, out, err = run(str(tree / "nested"), "-o", "json")
    assert code == 1 and err == ""
    first = json.loads(out)[0]
    assert first == {
        "file": str(tree / "nested" / "bad.yml"), "line": 5, "severity": "error",
        "kind": "PeerAuthentication", "namespace": "default", "name": "strict",
        "field": "spec.mtls.mode",
        "message": 'Unsupported value: "STRICTER": supported values: "UNSET", "DISABLE", '
                   '"PERMISSIVE", "STRICT"',
    }


def test_broken_yaml_missing_paths_and_unknown_kinds(tmp_path: Path):
    (tmp_path / "broken.yaml").write_text("kind: [\n")
    (tmp_path / "odd.yaml").write_text("apiVersion: example.com/v1\nkind: Widget\n"
                                       "metadata: {name: w}\n")
    code, out, _ = run(str(tmp_path / "missing.yaml"), str(tmp_path))
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == f"{tmp_path / 'missing.yaml'}: no such file or directory"
    assert lines[1].startswith(f"{tmp_path / 'broken.yaml'}:2: invalid YAML")
    assert lines[2] == (f"{tmp_path / 'odd.yaml'}:1: warning: Widget default/w: unknown kind "
                        "Widget (example.com/v1); not validated")


def test_core_kind_with_unserved_version(tmp_path: Path):
    (tmp_path / "svc.yaml").write_text("apiVersion: v2\nkind: Service\nmetadata: {name: s}\n")
    code, out, _ = run(str(tmp_path))
    assert code == 1
    assert 'apiVersion: Unsupported value: "v2": supported values: "v1"' in out
