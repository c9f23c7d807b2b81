"""A fake Kubernetes API server, for testing what talks to one.

Test infrastructure only. No kube-apiserver can run on the machines pilotfish is built and
tested on (none is packaged on the registries they reach), so this server was written from
the Kubernetes API conventions to speak the real HTTP API well enough that the official
`kubernetes` Python client works against it unchanged, through the kubeconfig it writes::

    from pilotfish.testing.kube import running

    with running(tmp_path) as api:                      # HTTPS, its own CA, a bearer token
        client = kubernetes.config.new_client_from_config(str(api.kubeconfig))
        core = kubernetes.client.CoreV1Api(client)
        core.create_namespaced_config_map("default", {"metadata": {"name": "x"}})

or, inside a task group, ``port = await tg.start(FakeKubeApi(tmp_path).serve)``.

What it serves:

- kinds: core/v1 Namespace, Service, Pod, Node, ServiceAccount, Secret, ConfigMap, Event;
  discovery.k8s.io/v1 EndpointSlice; coordination.k8s.io/v1 Lease; apps/v1 Deployment
  and DaemonSet (stored, never run: their status is what a test writes);
  policy/v1 PodDisruptionBudget; rbac.authorization.k8s.io/v1 (Cluster)Role(Binding);
  admissionregistration.k8s.io/v1 Mutating- and ValidatingWebhookConfiguration;
  apiextensions.k8s.io/v1 CustomResourceDefinition, and every custom resource a created CRD
  defines (404 until then); authentication.k8s.io/v1 TokenReview. Discovery at ``/api``,
  ``/apis``, ``/apis/GROUP[/VERSION]``, and ``/version``.
- verbs: get; list with label and field selectors, ``limit`` and ``continue`` (pages read at
  the first page's resourceVersion); create (``generateName`` too); update with
  resourceVersion conflicts (409); patch: JSON patch, merge patch, strategic merge (merge
  with keyed lists; 415 for custom resources, as there), and server-side apply with field
  managers, conflicts and ``force``; delete (finalizers and a scheduled pod's grace period
  delay it), deletecollection; the status subresource; ``dryRun=All``.
- watch: ADDED / MODIFIED / DELETED from a resourceVersion, BOOKMARK events when allowed,
  410 Gone (an ERROR event with a 410 Status) for a version older than the kept history,
  ``timeoutSeconds``; ``cut_watches()`` drops every watch mid-stream, ``compact()``
  forgets the history, ``bookmark()`` sends bookmarks now.
- one resourceVersion counter for everything (etcd's revision); uid, creationTimestamp,
  generation (moved by changes outside metadata and status) and managedFields filled in;
  refusals as ``Status`` objects with kube-apiserver's codes and reasons (400, 401, 404,
  405, 409, 410, 415, 422, 500, 504).
- ``requests(method, plural, subresource)``: how many requests of a method reached a kind
  (a test's count of writes, e.g. PATCHes of ``gateways`` ``status``).
- TokenReview for the tokens a test registers (``add_token``, ``tokens.service_account``)
  and for those it issued on a TokenRequest (``serviceaccounts/NAME/token``, a kubelet's
  request for a pod's projected token: the audiences asked, bound to the pod named).
- ClusterIPs: a Service created without one gets the first free address of the service
  range (``service_cidr``, default 10.96.0.0/16; ``.1`` is left for the API's own).
- admission: webhooks of the stored configurations called over HTTPS with their
  ``caBundle``, as kube-apiserver calls them (``admission``).

Not served: authorization (every authenticated user may do anything), CRD schema
validation and pruning, conversion webhooks (versions of a custom resource differ only in
``apiVersion``), protobuf and CBOR, the ``/watch/`` legacy paths, and kinds not listed.
"""

from pilotfish.testing.kube.server import FakeKubeApi, running
from pilotfish.testing.kube.tokens import TokenUser, service_account

__all__ = ["FakeKubeApi", "TokenUser", "running", "service_account"]
