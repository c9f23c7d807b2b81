"""What is accepted but not applied: warned per object, and listed in docs/envoy.md from
the same table."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from pilotfish.core.yamlload import load_text
from pilotfish.validation import validate

ROOT = Path(__file__).resolve().parents[3]


def test_a_field_not_applied_is_warned_where_it_is_set():
    objects, _ = load_text("""\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: shop}
spec:
  host: web
  trafficPolicy:
    portLevelSettings:
    - port: {number: 80}
      connectionPool: {http: {http2KeepAlive: {interval: 10s}}}
""", "dr.yaml")
    warnings = [f"{e.field}: {e.message}" for e in validate(objects[0])
                if e.severity == "warning"]
    assert warnings == [
        "spec.trafficPolicy.portLevelSettings[0].connectionPool.http.http2KeepAlive: accepted "
        "but not applied by pilotfish: HTTP/2 keepalive pings to upstreams are not configured"]


def test_docs_list_what_the_code_says():
    spec = importlib.util.spec_from_file_location("gen", ROOT / "scripts" / "gen_not_applied.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    text = (ROOT / "docs" / "envoy.md").read_text()
    assert gen.render(text) == text, "run scripts/gen_not_applied.py"
