"""pilotfish's own proxy: an xDS client and an event loop serving what Envoy would.

The native proxy reads the same bootstrap Envoy does (``bootstrap``), keeps one ADS stream
to discovery (``client_session`` decides what to send, sans-IO; ``xds_client`` moves the
messages), turns the resources it accepts into its runtime config (``config``: the
supported subset of Envoy's v3 API — anything outside it is NACKed with the resource, field
and type URL), and serves listeners with it (``proxy``), routing HTTP with ``routing``.
Its admin API (``admin``) answers as Envoy's does, so the agent and ``pilotfish
proxy-config`` need not know which proxy runs.
"""

from pilotfish.core.native import compiled

# Before any module of the hot path is imported: use its compiled build only when current.
compiled.guard()
