"""A real operator process against the API emulator: a refused Experiment is Degraded for the
generation it judged, with one event from the operator itself, and kopf's bookkeeping on the object
is one short annotation."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest
from experiment_env import EXP_PATH, Api, events, experiment_status, start_operator

from support import wait_until

pytestmark = pytest.mark.integration

NS = "default"


def refused_experiment(name: str) -> dict:
    return {
        "apiVersion": "mlrollouts.io/v1alpha1",
        "kind": "Experiment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "variants": [
                {"name": "a", "modelDeployment": "md-a", "weight": 50},
                {"name": "b", "modelDeployment": "md-b", "weight": 50},
            ],
            "policy": {"type": "Fixed"},
            "traffic": {"provider": "GatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}]}},
        },
    }


def test_refused_experiment_events_come_from_the_operator(tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        api = Api(tmp_path)
        stack.callback(api.stop)
        operator, _ = start_operator(api, tmp_path, "http://127.0.0.1:9", tick=0.5)
        stack.callback(operator.stop)
        api.request("POST", EXP_PATH.format(ns=NS), refused_experiment("gw-ab"))
        wait_until(
            lambda: (
                experiment_status(api, NS, "gw-ab").get("phase") == "Degraded" and events(api, NS, "gw-ab")
            ),
            timeout=30,
            message="refused and reported",
        )
        status = experiment_status(api, NS, "gw-ab")
        assert status["observedGeneration"] == 1 and "spec.traffic.provider" in status["message"]
        time.sleep(3)  # room for a second pass of the create and resume handlers, and for its event
        posted = events(api, NS, "gw-ab")
        assert [e["reason"] for e in posted] == ["InvalidSpec"], posted
        [event] = posted
        assert event["source"]["component"] == "mlrollouts-operator"
        assert event["reportingComponent"] == "mlrollouts.io/operator"
        assert event["metadata"]["name"].startswith("gw-ab.") and "kopf" not in event["metadata"]["name"]
        annotations = api.get(f"{EXP_PATH.format(ns=NS)}/gw-ab")["metadata"].get("annotations") or {}
        assert not any(k.endswith("last-handled-configuration") for k in annotations), annotations
        assert all(len(v) < 80 for v in annotations.values()), annotations
