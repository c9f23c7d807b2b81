"""pilotfish.interceptors."""
