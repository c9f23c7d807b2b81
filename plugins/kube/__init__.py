"""The ``kubernetes`` config source: a cluster's objects, through its API server
(`source`), as the store takes them from files too."""
