"""The local container runtime's resources: pod limits become podman's cgroup flags, and what it
cannot honour fails the pod naming the field."""

from __future__ import annotations

import pytest

from mlrollouts.local.containers import resource_flags, validate


def container(resources: dict) -> dict:
    return {"name": "server", "image": "mlrollouts/serving:dev", "resources": resources}


def test_limits_and_cpu_requests_become_cgroup_flags():
    flags = resource_flags(
        container(
            {"limits": {"memory": "1Gi", "cpu": "1500m"}, "requests": {"cpu": "100m", "memory": "256Mi"}}
        )
    )
    assert flags == ["--memory=1073741824", "--memory-swap=1073741824", "--cpus=1.5", "--cpu-shares=102"]


def test_no_resources_no_flags_and_tiny_requests_get_the_kernel_minimum():
    assert resource_flags({"name": "x", "image": "i"}) == []
    assert resource_flags(container({"requests": {"cpu": "1m"}})) == ["--cpu-shares=2"]


@pytest.mark.parametrize(
    ("resources", "field"),
    [
        ({"limits": {"nvidia.com/gpu": 1}}, "resources.limits.nvidia.com/gpu"),
        ({"requests": {"ephemeral-storage": "1Gi"}}, "resources.requests.ephemeral-storage"),
        ({"claims": [{"name": "gpu"}]}, "resources.claims"),
        ({"limits": {"memory": "lots"}}, "resources.limits.memory: 'lots' is not a quantity"),
    ],
)
def test_what_the_runtime_cannot_honour_fails_the_pod_naming_the_field(resources, field):
    with pytest.raises(ValueError, match="container 'server': ") as refused:
        validate({}, container(resources))
    assert field in str(refused.value)
