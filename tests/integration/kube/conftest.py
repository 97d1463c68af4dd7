from mlrollouts.local.apiserver.testing import apiserver, kubeconfig  # noqa: F401
