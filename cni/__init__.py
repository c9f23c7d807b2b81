"""pilotfish.cni: ``pilotfish-cni``, the chained CNI plugin (an application on top of the core).

It speaks the CNI protocol and hands each pod to the interceptors of the active profile,
found through the plugin manager like every other plugin.
"""
