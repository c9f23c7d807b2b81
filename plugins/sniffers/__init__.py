"""Built-in sniffers (entry-point group ``pilotfish.sniffers``): ``tls``, ``http1``, ``http2``."""
