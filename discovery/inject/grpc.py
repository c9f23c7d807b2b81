"""The ``grpc-simple`` template (``inject.istio.io/templates: grpc-simple``): proxyless gRPC
without an agent, as Istio's template of that name makes it.

No proxy and no capture: an init container writes a gRPC xDS bootstrap file into a shared
scratch volume, and every app container is pointed at it (``GRPC_XDS_BOOTSTRAP``). The
bootstrap names discovery's plaintext xDS port (15010) and asks for the ``grpc`` generator,
so the apps' gRPC libraries get their listeners, routes, clusters and endpoints from
discovery as proxyless gRPC clients and servers (the ``grpc`` generators,
docs/architecture.md). Nothing on the pod holds a certificate: this is the plaintext,
agent-less flavour. The app's probes are left as they are (no agent answers
``/app-health``)."""

from __future__ import annotations

from typing import Any

from pilotfish.discovery.inject.template import Context

VOLUME = "grpc-io-proxyless-bootstrap"
DATA_DIR = "/var/lib/grpc/data/"
BOOTSTRAP = DATA_DIR + "bootstrap.json"
INIT = "grpc-bootstrap-init"
INIT_IMAGE = "busybox:1.28"  # any image with a POSIX shell


def bootstrap_script(ctx: Context) -> str:
    """The init container's shell: the bootstrap JSON, with the pod's identity filled in
    from its environment when it runs."""
    s = ctx.settings
    rev = f"-{s.revision}" if s.revision else ""
    domain = s.text("global.proxy.clusterDomain")
    return "\n".join([
        f'NODE_ID="sidecar~${{INSTANCE_IP}}~${{POD_NAME}}.${{POD_NAMESPACE}}~{domain}"',
        f'SERVER_URI="dns:///istiod{rev}.${{ISTIO_NAMESPACE}}.svc:15010"',
        "echo '",
        "{",
        '  "xds_servers": [',
        "    {",
        '      "server_uri": "\'${SERVER_URI}\'",',
        '      "channel_creds": [{"type": "insecure"}],',
        '      "server_features" : ["xds_v3"]',
        "    }",
        "  ],",
        '  "node": {',
        '    "id": "\'${NODE_ID}\'",',
        '    "metadata": {',
        '      "GENERATOR": "grpc"',
        "    }",
        "  }",
        f"}}' > {BOOTSTRAP}",
    ])


def render(ctx: Context) -> dict[str, Any]:
    """The pod fragment the grpc-simple template makes for this pod."""
    mount = {"mountPath": DATA_DIR, "name": VOLUME}
    init = {
        "name": INIT,
        "image": INIT_IMAGE,
        "command": ["sh", "-c", bootstrap_script(ctx)],
        "env": [{"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}
                for name, path in (("INSTANCE_IP", "status.podIP"),
                                   ("POD_NAME", "metadata.name"),
                                   ("POD_NAMESPACE", "metadata.namespace"))]
        + [{"name": "ISTIO_NAMESPACE",
            "value": ctx.settings.text("global.istioNamespace") + "\n"}],
        "volumeMounts": [mount],
    }
    apps = [{"name": name,
             "env": [{"name": "GRPC_XDS_BOOTSTRAP", "value": BOOTSTRAP},
                     {"name": "GRPC_GO_LOG_VERBOSITY_LEVEL", "value": "99"},
                     {"name": "GRPC_GO_LOG_SEVERITY_LEVEL", "value": "info"}],
             "volumeMounts": [mount]} for name in ctx.app_containers]
    return {"metadata": {"annotations": {"sidecar.istio.io/rewriteAppHTTPProbers": "false"}},
            "spec": {"initContainers": [init], "containers": apps,
                     "volumes": [{"name": VOLUME, "emptyDir": {}}]}}
