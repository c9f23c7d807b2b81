"""Mesh identity: SPIFFE identities, node tokens, CSR signing and the CA's gRPC API."""
