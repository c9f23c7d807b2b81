"""Ambient mode's shared pieces: ztunnel's Workload Discovery types (generated from the protos
beside this file by scripts/gen_protos.py) and Istio's enrollment and waypoint rules."""
