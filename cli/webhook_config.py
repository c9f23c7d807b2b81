"""``pilotfish webhook-config --ca-cert PATH``: the MutatingWebhookConfiguration and
ValidatingWebhookConfiguration that send pods (``/inject``) and Istio config
(``/validate``) to discovery's webhooks, as YAML to apply.

They name Service ``istiod[-REV]`` in ``--namespace`` (port 443 → discovery's
``--webhook-address``), or ``--url https://HOST:PORT`` for a discovery outside the cluster,
and carry ``--ca-cert`` (discovery's ``root-cert.pem``) as their ``caBundle``: the API
server checks discovery's serving certificate against it. The selectors are Istio's
(``istio-injection=enabled``, ``istio.io/rev``, ``sidecar.istio.io/inject``); the revision
is the mesh config's ``injection.revision``.
"""

from __future__ import annotations

import argparse
import base64
import sys
from pathlib import Path
from typing import TextIO

from pilotfish.cli.kube_inject import settings_from
from pilotfish.core.output import CommandError, manifests
from pilotfish.discovery.inject.policy import webhook_configurations


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Print the webhook configurations that send pods and Istio config "
                          "to discovery's injection and validation webhooks.")
    parser.add_argument("--ca-cert", required=True, metavar="PATH",
                        help="PEM root discovery's serving certificate chains to: its "
                        "root-cert.pem (in --state-dir)")
    parser.add_argument("--namespace", default="istio-system",
                        help="namespace of discovery's Service (default: istio-system)")
    parser.add_argument("--url", default="",
                        help="call https://HOST:PORT instead of the Service (a discovery "
                        "outside the cluster; its certificate must name HOST)")
    parser.add_argument("--mesh-config", metavar="PATH",
                        help="pilotfish.yaml: injection.revision and the injection values")
    parser.add_argument("--revision", default=None, help="the control plane revision")
    parser.set_defaults(sets=[])


def main(args: argparse.Namespace, out: TextIO | None = None) -> int:
    try:
        pem = Path(args.ca_cert).read_bytes()
    except OSError as exc:
        raise CommandError(f"--ca-cert {args.ca_cert}: cannot read: {exc.strerror}") from None
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        raise CommandError(f"--ca-cert {args.ca_cert}: expected a PEM certificate")
    if args.url and not args.url.startswith("https://"):
        raise CommandError(f"--url {args.url}: the API server calls webhooks over https://")
    configurations = webhook_configurations(base64.b64encode(pem).decode(),
                                            settings_from(args), namespace=args.namespace,
                                            url=args.url)
    (out or sys.stdout).write(manifests(configurations))
    return 0
