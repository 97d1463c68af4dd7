"""A Kubernetes API server emulator (built on kmock) for tests and the local playground.

``ApiServer`` serves it on a loopback port from a background thread::

    with ApiServer(port=0) as api:
        api.write_kubeconfig(path)  # for kubectl, kopf and the kubernetes client
        api.audit                   # every request: verb, apiGroup, resource, subresource, namespace...

``mlrollouts local apiserver --port P --kubeconfig PATH`` runs it in the foreground until SIGTERM;
``serve(ApiEmulator(), host, port)`` runs it inside an existing event loop.

Behaves like a real API server for what kopf, the kubernetes client and kubectl do (uid, global
resourceVersion, generation, status and scale subresources, conflicts, patches, list/watch with
selectors and resume, legacy and aggregated discovery, CRD registration and schema/CEL validation, finalizers, garbage
collection, server-side printing). Approximations, by design:

- Server-side apply merges the applied configuration (named lists by key for built-in kinds,
  replacing other lists) and removes fields the same field manager applied before and left out
  now; managedFields and conflicts between managers are not tracked, ``force`` is ignored.
- Garbage collection, namespace termination and foreground deletion run right after the request
  that triggers them (in the same event loop, as separate changes), not in a controller with delays.
- No authentication or authorization: every request is allowed and audited (a bearer token
  ``system:serviceaccount:<namespace>:<name>``, as the playground gives each pod, is recorded as the
  call's ``user``). ValidatingWebhookConfigurations are called as a real server calls them.
- Core ``v1`` and ``events.k8s.io/v1`` events are stored separately.
- OpenAPI v2 is empty (clients validate nothing locally; the server validates custom resources,
  and rejects unknown fields under ``fieldValidation=Strict`` as kubectl asks). OpenAPI v3 has one
  document per group/version for ``kubectl explain``: a CRD's schema, and the top-level fields of a
  built-in kind.
- ``pods/log`` is served from the files of a process kubelet on the same machine (``pod_logs_dir``).
- Protobuf request bodies are understood for ConfigMap, Secret, Namespace and ServiceAccount
  (what ``kubectl create <kind>`` sends); other kinds must be sent as JSON or YAML.
- Watches end at ``timeoutSeconds`` (none by default); bookmarks come every ``bookmark_interval``.
"""

from .emulator import ApiEmulator
from .errors import ApiError, FieldError
from .resources import BUILTIN_RESOURCES, Registry, ResourceType
from .server import ApiServer, kubeconfig, serve, write_kubeconfig

__all__ = [
    "BUILTIN_RESOURCES",
    "ApiEmulator",
    "ApiError",
    "ApiServer",
    "FieldError",
    "Registry",
    "ResourceType",
    "kubeconfig",
    "serve",
    "write_kubeconfig",
]
