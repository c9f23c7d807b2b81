"""Config the tests share: the smallest mesh that has something to serve."""

from __future__ import annotations

# The Service alone: a sidecar in `shop` gets its cluster, with no endpoint.
WEB_SERVICE_ONLY = """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80}]
"""

# One Service with one Pod behind it: a sidecar in `shop` gets a cluster and an endpoint.
WEB_SERVICE = WEB_SERVICE_ONLY + """\
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web}}
status: {podIP: 10.0.0.1}
"""
