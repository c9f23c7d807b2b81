"""pilotfish.core: the small core every other layer builds on.

The config model and store, mesh config, push contexts and pushes, the xDS machinery
(session, generation cache, transport), the plugin manager with its hookspecs and the
contracts plugins implement, and the pieces a proxy's event loop needs. It imports no
other pilotfish package (docs/architecture.md; checked by import-linter).
"""
