"""The CNI protocol, plugin side and runtime side, without touching the network."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pilotfish.cni import protocol as cni
from pilotfish.cni.protocol import CniRequest
from pilotfish.node import cni_runtime

ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/x",
       "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni", "CNI_ARGS": "IgnoreUnknown=1;K=v"}
CONFIG = {"cniVersion": "1.0.0", "name": "net", "type": "pilotfish-cni",
          "prevResult": {"cniVersion": "1.0.0", "ips": [{"address": "10.250.0.2/24"}]}}
PLUGIN = Path(sys.executable).parent / "pilotfish-cni"


def run(env: dict[str, str], stdin: Any) -> tuple[int, dict[str, Any] | None]:
    seen: list[CniRequest] = []

    def add(request: CniRequest) -> dict[str, Any]:
        seen.append(request)
        return request.prev_result or {}

    out = io.StringIO()
    raw = stdin if isinstance(stdin, bytes) else json.dumps(stdin).encode()
    code = cni.run({"ADD": add}, env, raw, out)
    return code, json.loads(out.getvalue()) if out.getvalue() else None


def test_add_gets_the_parsed_request_and_its_result_is_printed():
    code, result = run(ENV, CONFIG)
    assert (code, result) == (0, CONFIG["prevResult"])


def test_version_lists_what_the_plugin_speaks():
    code, result = run({"CNI_COMMAND": "VERSION"}, {"cniVersion": "0.4.0"})
    assert code == 0 and result is not None
    assert result["cniVersion"] == "0.4.0"
    assert "1.0.0" in result["supportedVersions"]


@pytest.mark.parametrize(("env", "stdin", "code", "msg"), [
    ({**ENV, "CNI_COMMAND": "PING"}, CONFIG, 4, "CNI_COMMAND: 'PING' is not one of"),
    ({k: v for k, v in ENV.items() if k != "CNI_NETNS"}, CONFIG, 4,
     "CNI_NETNS is not set; ADD needs it"),
    ({**ENV, "CNI_ARGS": "novalue"}, CONFIG, 4, "CNI_ARGS: 'novalue' is not KEY=VALUE"),
    (ENV, b"{not json", 6, "network config on stdin is not JSON"),
    (ENV, [1], 6, "network config on stdin: expected a JSON object, got list"),
    (ENV, {**CONFIG, "cniVersion": "9.9.9"}, 1,
     "network config: cniVersion: '9.9.9' is not supported"),
    (ENV, {k: v for k, v in CONFIG.items() if k != "type"}, 7,
     "network config: type: expected a non-empty string (the field is missing)"),
    (ENV, {**CONFIG, "runtimeConfig": []}, 7, "network config: runtimeConfig: expected an object"),
])
def test_bad_environment_or_stdin_is_a_cni_error_naming_the_field(
        env: dict[str, str], stdin: Any, code: int, msg: str):
    status, result = run(env, stdin)
    assert status == 1 and result is not None
    assert set(result) == {"cniVersion", "code", "msg", "details"}
    assert result["code"] == code
    assert result["msg"].startswith(msg)


def test_the_installed_plugin_reports_bad_stdin_as_cni_error_json():
    env = {**os.environ, **ENV}
    bad = {**CONFIG, "runtimeConfig": {"pilotfishPod": {"name": "web", "namespace": "shop",
                                                        "annotations": {"x": 5}}}}
    done = subprocess.run([str(PLUGIN)], input=json.dumps(bad), env=env, capture_output=True,
                          text=True, check=False)
    assert done.returncode != 0
    error = json.loads(done.stdout)
    assert error["code"] == 7 and error["cniVersion"] == "1.0.0"
    assert error["msg"].startswith("runtimeConfig.pilotfishPod.annotations: expected an object")


def test_a_pod_the_runtime_says_nothing_about_passes_through_untouched():
    done = subprocess.run([str(PLUGIN)], input=json.dumps(CONFIG), env={**os.environ, **ENV},
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0
    assert json.loads(done.stdout) == CONFIG["prevResult"]
    assert "capabilities" in done.stderr  # says how to hand the pod over


def test_each_plugin_gets_the_list_name_version_and_only_its_capabilities():
    conflist = {"cniVersion": "1.0.0", "name": "pods", "plugins": []}
    runtime = {"pilotfishPod": {"name": "a"}, "portMappings": []}
    config = cni_runtime.plugin_config(
        conflist, {"type": "pilotfish-cni", "capabilities": {"pilotfishPod": True}},
        {"ips": []}, runtime)
    assert config == {"type": "pilotfish-cni", "capabilities": {"pilotfishPod": True},
                      "cniVersion": "1.0.0", "name": "pods", "prevResult": {"ips": []},
                      "runtimeConfig": {"pilotfishPod": {"name": "a"}}}
    assert "runtimeConfig" not in cni_runtime.plugin_config(conflist, {"type": "bridge"}, None,
                                                          runtime)


def test_missing_plugins_and_bad_conflists_are_named(tmp_path: Path):
    with pytest.raises(cni_runtime.ChainError, match="plugin nosuch: not found on the CNI path"):
        cni_runtime.find_plugin("nosuch", [tmp_path])
    import anyio

    with pytest.raises(cni_runtime.ChainError, match="plugins: expected a non-empty list"):
        anyio.run(lambda: cni_runtime.add({"cniVersion": "1.0.0", "name": "n", "plugins": []},
                                        "/x", "c", cache_dir=tmp_path))


def test_first_ipv4_skips_ipv6():
    result = {"ips": [{"address": "fd00::2/64"}, {"address": "10.250.0.2/24"}]}
    assert cni_runtime.first_ipv4(result) == "10.250.0.2"
    assert cni_runtime.ips(result) == ["fd00::2/64", "10.250.0.2/24"]
    with pytest.raises(cni_runtime.ChainError, match="no IPv4 address"):
        cni_runtime.first_ipv4({"ips": []})
