"""ztunnel: ambient mode's node proxy (``pilotfish ztunnel``), on the native proxy's event loop.

One process per node serves every ambient pod on it: the node agent hands it each pod's
network namespace over ZDS, and it opens the pod's listeners there (15001 outbound, 15006
inbound plaintext, 15008 inbound HBONE). What it knows of the mesh comes from discovery over
Workload Discovery (WDS), the certificates of the pods it serves from the CA, each asked for
in the pod's name. Its decisions are sans-IO in ``pilotfish.core.ambient``; this package is the
IO around them.
"""
