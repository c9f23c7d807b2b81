"""pilotfish.agent: pilot-agent's job for one proxy (an application on top of the core).

Bootstrap through the proxy backend, supervision of the proxy process, SDS with the workload
certificate, the xDS relay to 15012, readiness and merged metrics on 15020/15021, drain.
"""
