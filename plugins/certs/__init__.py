"""Built-in cert providers (entry-point group ``pilotfish.certs``): ``istio-ca`` and ``file``."""
