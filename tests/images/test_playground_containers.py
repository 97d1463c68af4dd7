"""The playground with ``runtime="podman"``: the canary of `make demo` with every pod a container.

The operator runs as a process of the playground; the model servers and the router run as podman
containers of the built serving image, from the Deployments the operator writes (command, args, env,
probes, securityContext, the /tmp emptyDir). About a minute and a half.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlrollouts.local.containers import LABEL, PodmanRuntime
from mlrollouts.local.demo_canary import CanaryScenario, train_demo_models
from mlrollouts.local.demo_scenario import DemoContext
from mlrollouts.local.playground import Playground
from support import require_binary, wait_until


@pytest.fixture(scope="module")
def canary(tmp_path_factory, podman, image):
    require_binary("prometheus")
    image("serving")
    root = tmp_path_factory.mktemp("playground-containers")
    models = train_demo_models(root / "models")
    playground = Playground(root / "state", runtime="podman").start()
    demo = CanaryScenario(DemoContext(playground), models)
    seen: dict[str, dict] = {}

    def record_containers() -> None:
        label = PodmanRuntime(playground.state_dir / "work").label
        listed = podman("ps", "--filter", f"label={LABEL}={label}", "--format", "json", check=False)
        for entry in json.loads(listed.stdout or "[]"):
            for name in entry.get("Names") or []:
                if name not in seen:  # the cgroup limits the engine gave it, read once
                    inspected = podman("inspect", "--format", "{{json .HostConfig}}", name, check=False)
                    entry["HostConfig"] = (
                        json.loads(inspected.stdout or "{}") if inspected.returncode == 0 else {}
                    )
                    seen[name] = entry

    original_sample = demo.sample

    def sample() -> str:
        record_containers()
        return original_sample()

    demo.sample = sample  # type: ignore[method-assign]
    try:
        demo.run()
        yield demo, playground, seen
    finally:
        demo.stop()
        playground.stop()


def test_canary_runs_with_serving_pods_as_containers(canary):
    demo, _, seen = canary
    status = demo.status()
    assert status["phase"] == "Degraded", status
    assert demo.labels[status["stableRevision"]] == "v2"
    answers = demo.traffic.snapshot()
    v2 = status["stableRevision"]
    assert answers[(v2, 200)] > 0, answers
    images = {
        entry["Image"].rsplit("/", 2)[-2] + "/" + entry["Image"].rsplit("/", 1)[-1] for entry in seen.values()
    }
    assert any(i.startswith("mlrollouts/serving:") for i in images), images
    names = " ".join(seen)
    assert "-server-" in names and "-router-" in names, names


def test_containers_ran_as_the_restricted_user_from_the_image(canary):
    _, playground, _ = canary
    logs = sorted((playground.state_dir / "work" / "pods").glob("*/*/server.log"))
    assert logs
    # uvicorn reports its process id: 1 is the container's first process, not a host process
    assert all("Started server process [1]" in log.read_text() for log in logs)


def test_containers_get_the_resource_limits_of_their_pods(canary):
    """The serving pods' limits.memory 1Gi and requests.cpu 100m, the router's 512Mi (the builders'
    defaults), as cgroup limits of their containers."""
    _, _, seen = canary
    limits = {
        name: (entry["HostConfig"].get("Memory"), entry["HostConfig"].get("CpuShares"))
        for name, entry in seen.items()
        if entry.get("HostConfig")
    }
    servers = {n: v for n, v in limits.items() if n.endswith(("-server-0", "-server-1"))}
    routers = {n: v for n, v in limits.items() if "-router-" in n}
    assert servers and routers, sorted(limits)
    assert set(servers.values()) == {(1024**3, 102)}, servers
    assert set(routers.values()) == {(512 * 1024**2, 102)}, routers


def test_no_container_outlives_the_playground(canary, podman):
    _, playground, _ = canary
    playground.stop()
    label = PodmanRuntime(playground.state_dir / "work").label

    def gone() -> bool:
        listed = podman("ps", "-a", "-q", "--filter", f"label={LABEL}={label}", check=False)
        return not listed.stdout.strip()

    wait_until(gone, timeout=60, message="the playground's containers to be removed")


def test_runtime_rejects_what_it_cannot_honour():
    from mlrollouts.local.containers import validate

    with pytest.raises(ValueError, match=r"securityContext\.seLinuxOptions"):
        validate({}, {"name": "c", "image": "x", "securityContext": {"seLinuxOptions": {}}})
    with pytest.raises(ValueError, match=r"seccompProfile\.type 'Localhost'"):
        validate({"securityContext": {"seccompProfile": {"type": "Localhost"}}}, {"name": "c", "image": "x"})


def test_run_as_non_root_is_checked_against_the_effective_user(podman, image, tmp_path: Path):
    runtime = PodmanRuntime(tmp_path)
    serving = image("serving")
    spec = {"name": "c", "image": serving}
    assert runtime.effective_user({}, spec)[0] == "65532"
    assert runtime.effective_user({"securityContext": {"runAsUser": 0}}, spec)[0] == "0"
    with pytest.raises(LookupError, match="make images"):
        runtime.image_user("mlrollouts/absent:0")
