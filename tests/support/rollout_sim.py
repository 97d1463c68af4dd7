"""A ModelDeployment driven by the pure rollout core as the controller drives it: every pass reads the
state from the status and writes it back through JSON. No API server, no processes."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from mlrollouts.api import ModelDeployment, ModelDeploymentStatus
from mlrollouts.core.verdicts import CheckOutcome, Verdict
from mlrollouts.rollout import Action, AnalysisRun, Observation, RevisionHealth, decide
from mlrollouts.rollout.resource import revision_template, rollout_spec, rollout_state, status_from_state

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def manifest(uri: str, **rollout: Any) -> dict:
    """Two weight steps with one error-rate check; ``rollout`` adds to ``spec.rollout``."""
    return {
        "apiVersion": "mlrollouts.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "iris", "namespace": "ml", "generation": 1, "uid": "u-1"},
        "spec": {
            "model": {"uri": uri, "format": "onnx"},
            "serving": {"replicas": 1},
            "rollout": {
                "steps": [{"weight": 20, "duration": "10s"}, {"weight": 50, "duration": "10s"}],
                "analysis": {
                    "interval": "5s",
                    "failureLimit": 2,
                    "checks": [{"name": "errors", "template": "error-rate", "max": 0.05}],
                },
                **rollout,
            },
        },
    }


class Cluster:
    """The resource, its children's readiness and the route, advanced one pass at a time; ``passes``
    keeps every status written."""

    def __init__(self, **rollout: Any) -> None:
        self.obj = manifest("file:///models/v1.onnx", **rollout)
        self.now = T0
        self.weights: dict[str, int] | None = None
        self.replicas: dict[str, int] = {}
        self.passes: list[dict] = []

    def tick(
        self,
        after: float = 0.0,
        verdict: Verdict | None = None,
        action: Action | None = None,
        judged: str | None = None,
        samples: float = 100,
    ) -> None:
        """One pass ``after`` seconds on; with ``verdict``, an analysis run of ``judged`` (default: the
        candidate) is due."""
        self.now += timedelta(seconds=after)
        md = ModelDeployment.model_validate(self.obj)
        spec = rollout_spec(md)
        state = rollout_state(md, spec)
        run = None
        if verdict is not None:
            check = CheckOutcome("errors", verdict, value=0.1, samples=samples)
            run = AnalysisRun(self.now, (check,), revision=judged or state.candidate)
        obs = Observation(
            revisions={r: RevisionHealth(n, n) for r, n in self.replicas.items()},
            verified_weights=self.weights,
            analysis=run,
            action=action,
        )
        decision = decide(spec, state, obs, self.now)
        status = status_from_state(
            decision.state,
            spec,
            md.status,
            True,
            self.now,
            model_uri=md.spec.model.uri,
            template=revision_template(md),
        )
        status = json.loads(json.dumps(status))
        ModelDeploymentStatus.model_validate(status)
        self.obj = {**self.obj, "status": status}
        self.passes.append(copy.deepcopy(status))
        self.weights = dict(decision.weights)
        self.replicas.update(decision.replicas)

    def set_spec(self, spec: dict) -> None:
        meta = {**self.obj["metadata"], "generation": self.obj["metadata"]["generation"] + 1}
        self.obj = {**self.obj, "metadata": meta, "spec": spec}
        for _ in range(3):
            self.tick()

    def deploy(self, uri: str) -> str:
        self.set_spec({**self.obj["spec"], "model": {"uri": uri, "format": "onnx"}})
        return self.status["candidateRevision"]

    def fail(self) -> None:
        self.tick(5, Verdict.FAIL)
        self.tick(5, Verdict.FAIL)
        assert self.status["phase"] == "Degraded"

    def pass_all_steps(self) -> None:
        for _ in range(12):
            self.tick(5, Verdict.PASS)
            if self.status["phase"] == "Healthy":
                return
        raise AssertionError(f"not promoted: {self.status.get('message')}")

    @property
    def status(self) -> dict:
        return self.obj["status"]

    def record(self, revision: str) -> dict:
        return next(r for r in self.status["revisions"] if r["revision"] == revision)

    def records(self) -> dict[str, dict]:
        return {r["revision"]: r for r in self.status["revisions"]}

    def runs_of(self, revision: str) -> list[dict]:
        return [r for r in self.status["analysis"]["runs"] if r.get("revision") == revision]
