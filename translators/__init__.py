"""pilotfish.translators."""
