"""ztunnel's Workload Discovery (WDS) generators: ``istio.workload.Address`` (`addresses`) and
``istio.security.Authorization`` (`authorization`), built from the push context."""
