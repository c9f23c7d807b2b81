"""The Gateway API conformance suite, run against a local mesh (see model.py and cases/)."""
