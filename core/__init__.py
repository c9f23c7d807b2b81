"""pilotfish.core."""
