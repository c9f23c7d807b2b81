"""The local node: pods as network namespaces on one machine (``pilotfish up``)."""
