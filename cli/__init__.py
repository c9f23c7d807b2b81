"""pilotfish.cli: the ``pilotfish`` command, the top layer: wires the applications together.

Each subcommand's module is imported only when that subcommand runs (``cli/main.py``).
"""
