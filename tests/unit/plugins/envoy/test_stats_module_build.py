"""The Envoy backend builds the metrics module (real compiler, real Envoy version) and names
it in the node metadata; asked for gRPC, or running the native proxy, it does not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pilotfish.core.proxy import STATS_MODULE, STATS_TABLE
from pilotfish.core.proxy_backend import ProxyOptions
from pilotfish.plugins.envoy import stats_module
from pilotfish.plugins.envoy.backend import METRICS_ENV, EnvoyBackend
from pilotfish.plugins.envoy.stats_table import TABLE_FILE
from pilotfish.plugins.native.backend import NativeBackend


def metadata(backend: EnvoyBackend, config_dir: Path) -> dict[str, str]:
    options = ProxyOptions(name="gw-1", namespace="default", ip="10.1.0.7",
                           discovery_address="10.96.0.1:15010", config_dir=config_dir,
                           proxy_type="router")
    written = json.loads(backend.write_bootstrap(options).read_text())
    return dict(written["node"]["metadata"])


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(stats_module.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_envoy_agents_name_the_built_module_and_its_table(tmp_path: Path, cache: Path) -> None:
    (tmp_path / "proxy").mkdir()
    (tmp_path / "proxy" / TABLE_FILE).write_bytes(b"an earlier Envoy's rows")
    found = metadata(EnvoyBackend(), tmp_path / "proxy")
    module = Path(found[STATS_MODULE])
    assert module.parent == cache / "envoy-modules" and module.stat().st_size > 0
    assert found[STATS_TABLE] == str(tmp_path / "proxy" / TABLE_FILE)
    assert not (tmp_path / "proxy" / TABLE_FILE).exists()  # the new Envoy makes its own
    # Built once per source and Envoy version: the next agent finds it.
    before = module.stat().st_mtime_ns
    assert metadata(EnvoyBackend(), tmp_path / "other")[STATS_MODULE] == str(module)
    assert module.stat().st_mtime_ns == before


def test_asked_for_grpc_the_metadata_names_no_module(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(METRICS_ENV, "als")
    assert STATS_MODULE not in metadata(EnvoyBackend(), tmp_path)


def test_the_native_proxy_is_never_sent_the_module(tmp_path: Path) -> None:
    assert STATS_MODULE not in metadata(NativeBackend(), tmp_path)


def test_a_compiler_error_names_the_compilers_output(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stats_module, "source", lambda: b"this is not C;\n")
    with pytest.raises(stats_module.StatsModuleError,
                       match=r"(?s)failed on istio_stats\.c.*error: unknown type name"):
        stats_module.build("1.40.0", tmp_path)
