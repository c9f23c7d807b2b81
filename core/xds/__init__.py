"""xDS: resource types, the sans-IO session, generation and the gRPC transport."""
