"""The CNI protocol, plugin side: environment and stdin in, a result or an error out.

A container runtime runs a plugin with ``CNI_COMMAND`` (ADD, DEL, CHECK, VERSION, and
1.1's GC and STATUS), ``CNI_CONTAINERID``, ``CNI_NETNS`` (a path), ``CNI_IFNAME``,
``CNI_ARGS`` (``K=V;K=V``) and ``CNI_PATH`` in the environment and the network config
JSON on stdin. Success prints a result (ADD) or nothing and exits 0; failure prints
``{"cniVersion", "code", "msg", "details"}`` on stdout and exits non-zero. Logs never
go to stdout: the runtime parses it.

``parse_request`` checks all of that (sans-IO) and ``run`` dispatches to handlers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, TextIO

import attrs

SUPPORTED_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
LATEST = SUPPORTED_VERSIONS[-1]
COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "GC", "STATUS")

# Error codes from the CNI spec; 100 and up are the plugin's own.
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENVIRONMENT = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_CONFIG = 7
TRY_AGAIN_LATER = 11

# What each command needs from the environment besides CNI_COMMAND.
_REQUIRED_ENV = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "GC": ("CNI_PATH",),
    "STATUS": ("CNI_PATH",),
    "VERSION": (),
}


class CniError(Exception):
    """A CNI error result; ``msg`` says what failed (naming the field), ``details`` more."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code, self.msg, self.details = code, msg, details

    def result(self, cni_version: str) -> dict[str, Any]:
        return {"cniVersion": cni_version, "code": self.code, "msg": self.msg,
                "details": self.details}


@attrs.frozen
class CniRequest:
    command: str
    container_id: str
    netns: str
    ifname: str
    args: Mapping[str, str]  # CNI_ARGS, parsed
    path: tuple[str, ...]  # CNI_PATH, split
    config: Mapping[str, Any]  # the network config from stdin

    @property
    def cni_version(self) -> str:
        return str(self.config.get("cniVersion", LATEST))

    @property
    def prev_result(self) -> dict[str, Any] | None:
        return self.config.get("prevResult")

    @property
    def runtime_config(self) -> Mapping[str, Any]:
        return self.config.get("runtimeConfig") or {}


def parse_args(text: str) -> dict[str, str]:
    """``CNI_ARGS``: ``K=V`` pairs separated by ``;``."""
    args = {}
    for pair in filter(None, text.split(";")):
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CniError(INVALID_ENVIRONMENT, f"CNI_ARGS: {pair!r} is not KEY=VALUE")
        args[key] = value
    return args


def parse_request(environ: Mapping[str, str], stdin: bytes) -> CniRequest:
    command = environ.get("CNI_COMMAND", "")
    if command not in COMMANDS:
        raise CniError(INVALID_ENVIRONMENT, f"CNI_COMMAND: {command!r} is not one of "
                       f"{', '.join(COMMANDS)}" if command else "CNI_COMMAND is not set")
    for name in _REQUIRED_ENV[command]:
        if not environ.get(name):
            raise CniError(INVALID_ENVIRONMENT, f"{name} is not set; {command} needs it")
    config = _parse_config(stdin, lenient=command == "VERSION")
    return CniRequest(
        command=command, container_id=environ.get("CNI_CONTAINERID", ""),
        netns=environ.get("CNI_NETNS", ""), ifname=environ.get("CNI_IFNAME", ""),
        args=parse_args(environ.get("CNI_ARGS", "")),
        path=tuple(p for p in environ.get("CNI_PATH", "").split(":") if p), config=config,
    )


def _parse_config(stdin: bytes, lenient: bool) -> dict[str, Any]:
    if lenient and not stdin.strip():
        return {}
    try:
        config = json.loads(stdin)
    except ValueError as exc:
        raise CniError(DECODE_FAILURE, f"network config on stdin is not JSON: {exc}") from None
    if not isinstance(config, dict):
        raise CniError(DECODE_FAILURE, "network config on stdin: expected a JSON object, got "
                       f"{type(config).__name__}")
    version = config.get("cniVersion")
    if lenient:
        if version is not None and version not in SUPPORTED_VERSIONS:
            raise CniError(INCOMPATIBLE_VERSION, f"cniVersion: {version!r} is not supported")
        return config
    for field in ("cniVersion", "name", "type"):
        if not isinstance(config.get(field), str) or not config[field]:
            raise CniError(INVALID_CONFIG, f"network config: {field}: expected a non-empty "
                           "string" + ("" if field in config else " (the field is missing)"))
    if version not in SUPPORTED_VERSIONS:
        raise CniError(INCOMPATIBLE_VERSION, f"network config: cniVersion: {version!r} is "
                       f"not supported", f"supported: {', '.join(SUPPORTED_VERSIONS)}")
    for field in ("prevResult", "runtimeConfig"):
        if field in config and not isinstance(config[field], dict):
            raise CniError(INVALID_CONFIG, f"network config: {field}: expected an object")
    return config


Handler = Callable[[CniRequest], "dict[str, Any] | None"]


def run(handlers: Mapping[str, Handler], environ: Mapping[str, str], stdin: bytes,
        stdout: TextIO) -> int:
    """Parse, dispatch to ``handlers[command]`` and write the outcome; the exit status."""
    version = LATEST
    try:
        request = parse_request(environ, stdin)
        version = request.cni_version
        if request.command == "VERSION":
            result: dict[str, Any] | None = {
                "cniVersion": request.config.get("cniVersion", LATEST),
                "supportedVersions": list(SUPPORTED_VERSIONS)}
        elif request.command in handlers:
            result = handlers[request.command](request)
        else:  # GC and STATUS: nothing of ours to collect, and we are always ready
            result = None
    except CniError as exc:
        stdout.write(json.dumps(exc.result(_version_hint(stdin, version))) + "\n")
        return 1
    if result is not None:
        stdout.write(json.dumps(result) + "\n")
    return 0


def _version_hint(stdin: bytes, default: str) -> str:
    """The config's cniVersion for an error result, when the config got that far."""
    try:
        version = json.loads(stdin).get("cniVersion")
    except (ValueError, AttributeError):
        return default
    return version if version in SUPPORTED_VERSIONS else default
