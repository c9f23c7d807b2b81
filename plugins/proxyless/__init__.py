"""Proxyless gRPC: the agent without a proxy (``pilotfish agent --proxy grpc``)."""
