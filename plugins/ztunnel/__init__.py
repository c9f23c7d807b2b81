"""ztunnel, ambient mode's node proxy, as a proxy backend."""
