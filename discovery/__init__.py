"""pilotfish.discovery: istiod's job (an application on top of the core).

Wires config sources, the store, pushes and the generators into the xDS server; runs the CA
service and secure xDS on 15012 and the debug endpoints on 15014.
"""
