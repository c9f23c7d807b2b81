"""pilotfish.plugins."""
