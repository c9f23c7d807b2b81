"""``pilotfish manifest generate``: every object that runs discovery on a cluster, as one
YAML stream (or a JSON ``List``) to read, keep or apply with ``kubectl apply
--server-side``; ``pilotfish install`` applies the same objects itself."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TextIO

from pilotfish.cli import manifests
from pilotfish.core.output import manifests as yaml_stream


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Print the manifests that install pilotfish on a cluster: the CRDs, "
                          "the namespace, discovery and what it needs.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    generate = actions.add_parser("generate", help="print every manifest",
                                  description="Print every manifest, in the order they are "
                                  "applied.")
    manifests.add_value_arguments(generate)
    generate.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml")


def main(args: argparse.Namespace, out: TextIO | None = None) -> int:
    objects = manifests.generate(manifests.values(args.profile, args.sets))
    out = out or sys.stdout
    if args.output == "json":
        out.write(json.dumps({"apiVersion": "v1", "kind": "List", "items": objects},
                             indent=2) + "\n")
    else:
        out.write(yaml_stream(objects))
    return 0
