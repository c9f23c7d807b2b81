"""The ``envoy`` proxy backend: everything pilotfish knows about running stock Envoy."""
