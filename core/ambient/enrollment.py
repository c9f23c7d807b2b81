"""Which pods ambient mode captures: Istio's enablement rule (istio/api ``label/labels.yaml``,
``cni/pkg/util/podutil.go``).

A pod is ambient when it or its namespace says ``istio.io/dataplane-mode: ambient``, unless the
pod opts out with ``none``, already has a sidecar (the injector's ``sidecar.istio.io/status``)
or shares the node's network (``hostNetwork``: there is no pod network namespace to hold the
in-pod rules). Sans-IO: labels and specs in, a decision out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DATAPLANE_MODE_LABEL = "istio.io/dataplane-mode"
AMBIENT = "ambient"
NONE = "none"
SIDECAR_STATUS_ANNOTATION = "sidecar.istio.io/status"
# Set by the node agent once the pod's traffic is redirected to ztunnel.
REDIRECTION_ANNOTATION = "ambient.istio.io/redirection"
# ``http``: the pod's own proxy takes HBONE on 15008 (a sidecar with ENABLE_HBONE, which
# Istio's injector labels so; a gateway that terminates HBONE itself).
TUNNEL_LABEL = "networking.istio.io/tunnel"


def in_ambient(pod_labels: Mapping[str, str], pod_annotations: Mapping[str, str],
               namespace_labels: Mapping[str, str], pod_spec: Mapping[str, Any] | None = None
               ) -> bool:
    """Does ambient mode capture this pod (see the module docstring)?"""
    mode = pod_labels.get(DATAPLANE_MODE_LABEL)
    if mode == NONE or SIDECAR_STATUS_ANNOTATION in pod_annotations:
        return False
    if pod_spec and pod_spec.get("hostNetwork"):
        return False
    return mode == AMBIENT or namespace_labels.get(DATAPLANE_MODE_LABEL) == AMBIENT


def redirected(pod_annotations: Mapping[str, str]) -> bool:
    """Has the node agent marked the pod captured (``ambient.istio.io/redirection: enabled``)?"""
    return pod_annotations.get(REDIRECTION_ANNOTATION) == "enabled"


def native_hbone(pod_labels: Mapping[str, str]) -> bool:
    """Does the pod's own proxy accept HBONE (``networking.istio.io/tunnel: http``)?"""
    return pod_labels.get(TUNNEL_LABEL) == "http"
