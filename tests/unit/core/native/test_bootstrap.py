"""The native proxy's bootstrap: what it takes from the one the agent writes for Envoy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pilotfish.core.native import bootstrap
from pilotfish.core.proxy_backend import ProxyOptions
from pilotfish.plugins.envoy import bootstrap as envoy_bootstrap


def write(tmp_path: Path, xds_mode: str) -> Path:
    options = ProxyOptions(name="gw", namespace="default", ip="127.0.0.1",
                           discovery_address="127.0.0.1:15010", config_dir=tmp_path,
                           xds_mode=xds_mode)
    path = tmp_path / "envoy-rev.json"
    path.write_text(json.dumps(envoy_bootstrap.bootstrap(options, "0.1.0")))
    return path


@pytest.mark.parametrize(("mode", "api_type"), [("delta", "DELTA_GRPC"), ("sotw", "GRPC")])
def test_both_ads_flavours_the_agent_writes_are_taken(tmp_path: Path, mode: str,
                                                      api_type: str) -> None:
    boot = bootstrap.load(write(tmp_path, mode))
    assert boot.api_type == api_type and boot.xds_target == "127.0.0.1:15010"


def test_ads_other_than_over_grpc_is_refused_before_the_proxy_starts(tmp_path: Path) -> None:
    path = write(tmp_path, "sotw")
    config = json.loads(path.read_text())
    config["dynamic_resources"]["ads_config"]["api_type"] = "REST"
    path.write_text(json.dumps(config))
    with pytest.raises(bootstrap.BootstrapError, match="api_type REST: the native proxy "
                       "speaks ADS over gRPC only"):
        bootstrap.load(path)
