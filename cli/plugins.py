"""``pilotfish plugins``: the profiles installed, the plugins active, and where each came from."""

from __future__ import annotations

import argparse

from pilotfish.core import meshconfig, plugins
from pilotfish.core.output import emit, table


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("The profiles installed (plugin sets contributed by distributions) and "
                     "the plugins the mesh config activates, with their distributions.")
    p.add_argument("--mesh-config", help="pilotfish.yaml")
    p.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")


def main(args: argparse.Namespace) -> int:
    config = meshconfig.load(args.mesh_config)
    active = plugins.select(config)
    installed = plugins.installed_profiles()
    chosen = dict(plugins.profiles(config))
    profiles: list[dict[str, str | bool]] = [
        {"name": p.name, "active": p in chosen, "distribution": p.distribution,
         "version": p.version, "value": p.value, "description": p.load().description}
        for p in sorted(installed.values(), key=lambda p: p.name)]
    if args.output in ("json", "yaml"):
        emit({"profiles": profiles, "plugins": [
            {"group": p.group, "name": p.name, "module": p.value,
             "distribution": p.distribution, "version": p.version} for p in active]},
            args.output)
        return 0
    print(f"profile: {', '.join(config.profiles)} ({config.source})")
    print(table(["PROFILE", "ACTIVE", "DISTRIBUTION", "DESCRIPTION"],
                [[str(p["name"]), "yes" if p["active"] else "",
                  f"{p['distribution']} {p['version']}", str(p["description"])]
                 for p in profiles]))
    print(table(["GROUP", "NAME", "DISTRIBUTION", "MODULE"],
                [[p.group, p.name, f"{p.distribution} {p.version}", p.value] for p in active]),
          end="")
    return 0
