"""pilotfish.testing: helpers and contract suites for tests of pilotfish and its plugins."""
