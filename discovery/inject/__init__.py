"""Sidecar injection, as Istio's injector does it (sans-IO).

``pod.inject`` turns a pod (or a pod template) into the injected one; ``workloads`` applies
it to the objects ``kube-inject`` reads; ``policy`` says which pods are injected and writes
the webhook configurations; ``jsonpatch`` turns the result into the webhook's answer. The
webhook server itself is ``pilotfish.discovery.webhooks``. docs/injection.md describes it
for users.
"""
