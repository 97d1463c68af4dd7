"""A Kubernetes API server emulator (built on kmock) for tests and the local playground.

``ApiServer`` serves it on a loopback port from a background thread::

    with ApiServer(port=0) as api:
        api.write_kubeconfig(path)  # for kubectl, kopf and the kubernetes client
        ...

``mlrollouts local apiserver --port P --kubeconfig PATH`` runs it in the foreground.
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
