"""Conformance with Istio's own validation datasets, and the committed schema catalog.

``validation-valid/*.yaml`` and ``validation-crds/*-valid.yaml`` must produce no errors.
Every document of ``validation-crds/*-invalid.yaml`` carries an ``_err`` key with a piece
of the error the API server gives; we must give an error containing it. (The blocks marked
``#_err: "TODO"`` there are YAML comments, not documents: upstream has no expectation for
them, so neither do we.)
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import attrs
import pytest

from pilotfish.core.objects import ConfigObject
from pilotfish.core.yamlload import load_text
from pilotfish.validation import validate

ROOT = Path(__file__).resolve().parents[3]
CORPUS = ROOT.parent / "shared" / "corpus" / "istio"

# Deselected with a notice by tests/conftest.py when the corpus is absent.
pytestmark = pytest.mark.corpus

# libyaml (PyYAML) rejects an unquoted flow item that ends in ':' (``[1.2.3.4, 001:db8::]``),
# which Go's YAML reads as a string. One corpus file has such an IPv6 address; quote those
# items so the test exercises validation, not this parser difference.
_FLOW_ITEM_ENDING_IN_COLON = re.compile(r"(?<=[\[,] )([^\s,\[\]\"']+:)(?=[,\]])")


def _documents(pattern: str) -> list[tuple[str, ConfigObject]]:
    found = []
    for path in sorted(CORPUS.glob(pattern)):
        text = _FLOW_ITEM_ENDING_IN_COLON.sub(r'"\1"', path.read_text(encoding="utf-8"))
        objects, errors = load_text(text, str(path))
        assert errors == []
        for obj in objects:
            found.append((f"{path.name}:{obj.source.line}:{obj.name}", obj))
    return found


def _without_expectation(obj: ConfigObject) -> tuple[ConfigObject, str | None]:
    body = dict(obj.body)
    expected = body.pop("_err", None)
    return attrs.evolve(obj, body=body), expected


def _errors(obj: ConfigObject) -> list[str]:
    return [f"{e.field}: {e.message}" if e.field else e.message
            for e in validate(obj) if e.severity == "error"]


VALID = _documents("validation-valid/*.yaml") + _documents("validation-crds/*-valid.yaml") \
    if CORPUS.is_dir() else []
INVALID = _documents("validation-crds/*-invalid.yaml") if CORPUS.is_dir() else []


@pytest.mark.parametrize("obj", [o for _, o in VALID], ids=[i for i, _ in VALID])
def test_valid_documents_have_no_errors(obj: ConfigObject):
    obj, expected = _without_expectation(obj)
    assert expected is None
    assert _errors(obj) == []


@pytest.mark.parametrize("obj", [o for _, o in INVALID], ids=[i for i, _ in INVALID])
def test_invalid_documents_fail_with_the_expected_error(obj: ConfigObject):
    obj, expected = _without_expectation(obj)
    assert isinstance(expected, str) and expected
    errors = _errors(obj)
    assert any(expected in error for error in errors), errors


def test_corpus_is_not_empty():
    assert len(VALID) >= 60 and len(INVALID) >= 70  # 68 and 77 when this was written


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_crd_schemas",
                                                  ROOT / "scripts" / "gen_crd_schemas.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_catalog_matches_a_fresh_generation():
    gen = _generator()
    fresh = gen.render(gen.derive((CORPUS / "crds" / "crd-all.gen.yaml").read_text()))
    committed = (ROOT / "validation" / "istio_schemas.json").read_text()
    assert committed == fresh, "run scripts/gen_crd_schemas.py and commit the result"
    assert '"description"' not in committed
