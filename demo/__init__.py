"""pilotfish.demo."""
