"""The runtime side of CNI: run a conflist's plugins for a container, as libcni does.

pilotfish's local node has no container runtime, so this module is one: ``add`` runs each
plugin of a network config list in order (ADD), handing every plugin the previous one's
result as ``prevResult``, and caches the final result; ``delete`` runs them in reverse
(DEL) with the cached result; ``check`` runs them in order (CHECK) with it. Like libcni,
each plugin gets the list's ``name`` and ``cniVersion`` injected into its own config, and
``runtimeConfig`` holds only the runtime-config keys the plugin declared in its
``capabilities``. Like a CRI runtime, a failed ADD is followed by a DEL so nothing leaks.

Plugins are executables named by ``type``, looked up on the CNI path: Debian's
``/usr/lib/cni`` (``bridge``, ``host-local``, ``loopback``...), ``/opt/cni/bin``, and this
Python environment's ``bin`` (``pilotfish-cni``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio

DEFAULT_CNI_PATH = (Path("/usr/lib/cni"), Path("/opt/cni/bin"), Path(sys.executable).parent)
DEFAULT_CACHE_DIR = Path("/var/lib/cni")  # libcni's
PLUGIN_TIMEOUT = 60.0
log = logging.getLogger(__name__)


class ChainError(RuntimeError):
    """A plugin failed or could not run; names the network, the plugin and its message."""

    def __init__(self, message: str, *, plugin: str = "", code: int | None = None,
                 msg: str = "", details: str = "") -> None:
        super().__init__(message)
        self.plugin, self.code, self.msg, self.details = plugin, code, msg, details


def find_plugin(name: str, cni_path: Sequence[Path | str]) -> Path:
    for folder in cni_path:
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise ChainError(
        f"plugin {name}: not found on the CNI path {':'.join(map(str, cni_path))} "
        "(Debian: apt-get install containernetworking-plugins; pilotfish-cni comes with "
        "pilotfish)", plugin=name)


def _check_conflist(conflist: Mapping[str, Any]) -> list[dict[str, Any]]:
    for field in ("cniVersion", "name"):
        if not isinstance(conflist.get(field), str) or not conflist[field]:
            raise ChainError(f"network config list: {field}: expected a non-empty string")
    plugins = conflist.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        raise ChainError(f"network config list {conflist['name']}: plugins: expected a "
                         "non-empty list")
    for index, plugin in enumerate(plugins):
        if not isinstance(plugin, dict) or not isinstance(plugin.get("type"), str):
            raise ChainError(f"network config list {conflist['name']}: plugins[{index}]: "
                             "expected an object with a type")
    return plugins


def plugin_config(conflist: Mapping[str, Any], plugin: Mapping[str, Any],
                  prev_result: Mapping[str, Any] | None,
                  runtime_config: Mapping[str, Any]) -> dict[str, Any]:
    """One plugin's stdin: its entry, plus the list's name and version, the previous
    result, and the runtime config it declared capabilities for."""
    config = {**plugin, "cniVersion": conflist["cniVersion"], "name": conflist["name"]}
    if prev_result is not None:
        config["prevResult"] = prev_result
    capabilities = plugin.get("capabilities") or {}
    granted = {key: value for key, value in runtime_config.items() if capabilities.get(key)}
    if granted:
        config["runtimeConfig"] = granted
    return config


async def _run_plugin(command: str, conflist: Mapping[str, Any], index: int,
                      config: Mapping[str, Any], env: Mapping[str, str],
                      cni_path: Sequence[Path | str]) -> dict[str, Any] | None:
    name = config["type"]
    where = f"CNI {command} {conflist['name']}: plugin {name} (plugins[{index}])"
    binary = find_plugin(name, cni_path)
    with anyio.fail_after(PLUGIN_TIMEOUT):
        done = await anyio.run_process([str(binary)], input=json.dumps(config).encode(),
                                       env={**os.environ, **env}, check=False)
    out, err = done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
    try:
        parsed = json.loads(out) if out.strip() else None
    except ValueError:
        parsed = None
    if done.returncode != 0:
        if isinstance(parsed, dict) and "msg" in parsed:
            msg, details, code = str(parsed["msg"]), str(parsed.get("details", "")), \
                parsed.get("code")
            text = f"{where} failed: {msg}" + (f": {details}" if details else "") + \
                f" (code {code})"
            raise ChainError(text, plugin=name, code=code, msg=msg, details=details)
        detail = (err or out).strip() or "no output"
        raise ChainError(f"{where} exited with status {done.returncode}: {detail}",
                         plugin=name, msg=detail)
    if command == "ADD" and not isinstance(parsed, dict):
        raise ChainError(f"{where}: ADD printed no result: {out.strip()[:200]!r}",
                         plugin=name)
    if err.strip():  # a plugin's notes (why a pod was left alone, ...): debug detail
        log.debug("%s: %s", where, err.strip())
    return parsed


def _env(command: str, container_id: str, netns: Path | str, ifname: str,
         cni_path: Sequence[Path | str], cni_args: Mapping[str, str]) -> dict[str, str]:
    return {
        "CNI_COMMAND": command, "CNI_CONTAINERID": container_id, "CNI_NETNS": str(netns),
        "CNI_IFNAME": ifname, "CNI_PATH": ":".join(map(str, cni_path)),
        "CNI_ARGS": ";".join(f"{k}={v}" for k, v in cni_args.items()),
    }


def _cni_args(runtime_config: Mapping[str, Any],
              cni_args: Mapping[str, str] | None) -> dict[str, str]:
    if cni_args is not None:
        return dict(cni_args)
    # What kubelet's runtimes pass: the pod's name and namespace.
    pod = runtime_config.get("pilotfishPod") or {}
    args = {"IgnoreUnknown": "1"}
    if isinstance(pod, dict) and pod.get("name") and pod.get("namespace"):
        args.update(K8S_POD_NAMESPACE=str(pod["namespace"]), K8S_POD_NAME=str(pod["name"]))
        if pod.get("uid"):
            args["K8S_POD_UID"] = str(pod["uid"])
    return args


def _cache_file(cache_dir: Path, network: str, container_id: str, ifname: str) -> Path:
    return cache_dir / "results" / f"{network}-{container_id}-{ifname}"


async def add(conflist: Mapping[str, Any], netns: Path | str, container_id: str,
              ifname: str = "eth0", *, runtime_config: Mapping[str, Any] | None = None,
              cni_path: Sequence[Path | str] = DEFAULT_CNI_PATH,
              cni_args: Mapping[str, str] | None = None,
              cache_dir: Path = DEFAULT_CACHE_DIR) -> dict[str, Any]:
    """ADD the container to the network; the last plugin's result (IPs, interfaces)."""
    plugins = _check_conflist(conflist)
    runtime = dict(runtime_config or {})
    args = _cni_args(runtime, cni_args)
    env = _env("ADD", container_id, netns, ifname, cni_path, args)
    result: dict[str, Any] | None = None
    try:
        for index, plugin in enumerate(plugins):
            config = plugin_config(conflist, plugin, result, runtime)
            result = await _run_plugin("ADD", conflist, index, config, env, cni_path)
    except BaseException:
        # A runtime tears a failed sandbox down; so do we, quietly: the ADD failure is
        # the one to report.
        with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
            await delete(conflist, netns, container_id, ifname, runtime_config=runtime,
                         cni_path=cni_path, cni_args=args, cache_dir=cache_dir)
        raise
    assert result is not None
    cache = _cache_file(cache_dir, conflist["name"], container_id, ifname)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({
        "kind": "cniCacheV1", "containerId": container_id, "ifName": ifname,
        "networkName": conflist["name"], "cniArgs": args, "capabilityArgs": runtime,
        "result": result,
    }))
    return result


def cached_result(conflist: Mapping[str, Any], container_id: str, ifname: str = "eth0",
                  cache_dir: Path = DEFAULT_CACHE_DIR) -> dict[str, Any] | None:
    path = _cache_file(cache_dir, str(conflist.get("name")), container_id, ifname)
    try:
        result = json.loads(path.read_text())["result"]
    except (OSError, ValueError, KeyError):
        return None
    return result if isinstance(result, dict) else None


async def delete(conflist: Mapping[str, Any], netns: Path | str, container_id: str,
                 ifname: str = "eth0", *, runtime_config: Mapping[str, Any] | None = None,
                 cni_path: Sequence[Path | str] = DEFAULT_CNI_PATH,
                 cni_args: Mapping[str, str] | None = None,
                 cache_dir: Path = DEFAULT_CACHE_DIR) -> None:
    """DEL the container from the network: every plugin, last first."""
    plugins = _check_conflist(conflist)
    runtime = dict(runtime_config or {})
    prev = cached_result(conflist, container_id, ifname, cache_dir)
    env = _env("DEL", container_id, netns, ifname, cni_path, _cni_args(runtime, cni_args))
    for index in reversed(range(len(plugins))):
        config = plugin_config(conflist, plugins[index], prev, runtime)
        await _run_plugin("DEL", conflist, index, config, env, cni_path)
    _cache_file(cache_dir, conflist["name"], container_id, ifname).unlink(missing_ok=True)


async def check(conflist: Mapping[str, Any], netns: Path | str, container_id: str,
                ifname: str = "eth0", *, runtime_config: Mapping[str, Any] | None = None,
                cni_path: Sequence[Path | str] = DEFAULT_CNI_PATH,
                cni_args: Mapping[str, str] | None = None,
                cache_dir: Path = DEFAULT_CACHE_DIR) -> None:
    """CHECK the container's networking: every plugin in order, given the ADD result."""
    plugins = _check_conflist(conflist)
    if conflist["cniVersion"] in ("0.1.0", "0.2.0", "0.3.0", "0.3.1"):
        raise ChainError(f"CNI CHECK {conflist['name']}: needs cniVersion 0.4.0 or later")
    prev = cached_result(conflist, container_id, ifname, cache_dir)
    if prev is None:
        raise ChainError(f"CNI CHECK {conflist['name']}: no cached ADD result for "
                         f"container {container_id} interface {ifname}")
    runtime = dict(runtime_config or {})
    env = _env("CHECK", container_id, netns, ifname, cni_path, _cni_args(runtime, cni_args))
    for index, plugin in enumerate(plugins):
        config = plugin_config(conflist, plugin, prev, runtime)
        await _run_plugin("CHECK", conflist, index, config, env, cni_path)


def ips(result: Mapping[str, Any]) -> list[str]:
    """The addresses a result gives the container, with prefix ("10.250.0.2/24")."""
    return [str(ip["address"]) for ip in result.get("ips", []) if "address" in ip]


def first_ipv4(result: Mapping[str, Any]) -> str:
    """The container's first IPv4 address, without prefix."""
    for address in ips(result):
        host = address.split("/", 1)[0]
        if ":" not in host:
            return host
    raise ChainError(f"the CNI result has no IPv4 address: {json.dumps(result)[:300]}")
