"""Generators for proxyless gRPC: gRPC's own xDS client, as Istio's ``grpc`` generator serves it.

A gRPC application dialing ``xds:///reviews.default.svc.cluster.local:9080`` with a bootstrap
whose node metadata says ``GENERATOR: grpc`` is a proxy of kind ``grpc``. It asks by name,
over state-of-the-world ADS, for:

- LDS ``HOST:PORT``: an API listener whose HTTP connection manager names the route table
  ``FQDN:PORT`` (short names a pod's resolver would complete get a listener each);
- RDS ``FQDN:PORT``: the service's routes, as a sidecar would route that host on that port
  (VirtualService matches, weighted clusters, retries, timeouts, faults);
- CDS ``outbound|PORT|SUBSET|FQDN``: EDS clusters with the DestinationRule's load balancer;
- EDS: the endpoints, each group with a locality and a weight (gRPC ignores groups that
  lack either).

Only what gRPC's client implements is emitted (``listeners``, ``routes``, ``clusters`` and
``endpoints`` say what is left out). The ``grpc`` profile activates these four plugins; the
sidecar generators are untouched by it.
"""
