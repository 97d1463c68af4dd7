"""The canary scenario of `make demo`: a model canaried, a better one promoted, a broken one rolled back.

1. Train three models on the iris data set that ships with scikit-learn: v1 (a deliberately weak
   logistic regression), v2 (a well-fitted one) and v3 (an ONNX graph that fails at inference, so
   every request it serves is a 500).
2. Apply ``examples/canary/playground.yaml`` with v1, wait until it is Healthy, and send traffic to
   its entry point (the router) from a background thread.
3. Upgrade to v2: shadow → 10 % → 50 % → promoted. Upgrade to v3: rolled back by analysis.
4. Plot weights and error rates (``rollout.png``).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import httpx
import yaml

from mlrollouts.core.names import API_VERSION
from mlrollouts.local.demo_scenario import (
    DemoContext,
    DemoError,
    Scenario,
    Status,
    TrafficGenerator,
    entry_point,
    prometheus_vector,
)

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "canary" / "playground.yaml"


# ------------------------------------------------------------------------------------------ models
@dataclass(frozen=True)
class DemoModels:
    v1: Path
    v2: Path
    v3: Path
    rows: list[list[float]]
    labels: list[int]


def train_demo_models(directory: Path) -> DemoModels:
    """v1 weak, v2 good (skops files, compiled to ONNX by the server), v3 broken (ONNX)."""
    import numpy as np
    import onnx
    import skops.io as sio
    from onnx import TensorProto, helper
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    directory.mkdir(parents=True, exist_ok=True)
    x, y = load_iris(return_X_y=True)
    weak = LogisticRegression(C=0.005, max_iter=200).fit(x, y)
    good = LogisticRegression(C=10.0, max_iter=2000).fit(x, y)
    v1, v2, v3 = directory / "iris-v1.skops", directory / "iris-v2.skops", directory / "iris-v3.onnx"
    sio.dump(weak, v1)
    sio.dump(good, v2)
    # v3: loads and describes itself like the others, but its graph reshapes one row of 4 features
    # into 3 columns, which fails at run time for every request.
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["input", "shape"], ["probabilities"])],
        "broken",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, v3)
    rng = np.random.default_rng(0)
    index = rng.permutation(len(x))[:60]
    return DemoModels(v1, v2, v3, x[index].tolist(), [int(v) for v in y[index]])


# ----------------------------------------------------------------------------------------- samples
@dataclass
class Sample:
    t: float
    phase: str
    step: int | None
    stable: str | None
    candidate: str | None
    weights: dict[str, int]
    shadow: dict[str, int]
    rps: dict[str, float]
    error_rate: dict[str, float]
    p99: dict[str, float]
    verdict: str


def take_sample(status: Status, prometheus: str, model: str, t: float) -> Sample:
    weights = {w["revision"]: int(w.get("desired", 0)) for w in status.get("weights") or []}
    runs = (status.get("analysis") or {}).get("runs") or []
    selector = f'model="{model}"'
    return Sample(
        t=t,
        phase=status.get("phase", "Pending"),
        step=status.get("currentStep"),
        stable=status.get("stableRevision"),
        candidate=status.get("candidateRevision"),
        weights=weights,
        shadow={w["revision"]: int(w["shadow"]) for w in status.get("weights") or [] if w.get("shadow")},
        rps=prometheus_vector(
            prometheus, f"sum by (revision) (rate(mlserving_requests_total{{{selector}}}[10s]))", "revision"
        ),
        error_rate=prometheus_vector(
            prometheus,
            f'sum by (revision) (rate(mlserving_requests_total{{{selector},code=~"5.."}}[10s])) '
            f"/ sum by (revision) (rate(mlserving_requests_total{{{selector}}}[10s]))",
            "revision",
        ),
        p99=prometheus_vector(
            prometheus,
            "histogram_quantile(0.99, sum by (revision, le) "
            f"(rate(mlserving_request_duration_seconds_bucket{{{selector}}}[10s])))",
            "revision",
        ),
        verdict=", ".join(f"{r['check']}={r['verdict']}" for r in runs[-2:]),
    )


def render_sample(s: Sample, labels: dict[str, str]) -> list[str]:
    lines = [
        f"  phase={s.phase:<12} step={s.step if s.step is not None else '-'}",
        f"  {'revision':<12} {'model':<6} {'weight':>6} {'req/s':>7} {'errors':>7} {'p99 ms':>8}",
    ]
    for revision in sorted(set(s.weights) | set(s.rps)):
        rps = s.rps.get(revision)
        err = s.error_rate.get(revision)
        p99 = s.p99.get(revision)
        role = " (stable)" if revision == s.stable else (" (candidate)" if revision == s.candidate else "")
        lines.append(
            f"  {revision:<12} {labels.get(revision, '?'):<6} {s.weights.get(revision, 0):>5}% "
            f"{rps if rps is not None else 0:>7.1f} {(err or 0) * 100:>6.1f}% "
            f"{p99 * 1000 if p99 is not None else float('nan'):>8.2f}{role}"
        )
    lines.append(f"  last checks: {s.verdict or '-'}")
    return lines


def plot(samples: list[Sample], labels: dict[str, str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    revisions = sorted({r for s in samples for r in (*s.weights, *s.rps)})
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    times = [s.t for s in samples]
    for revision in revisions:
        label = f"{labels.get(revision, '?')} ({revision})"
        (line,) = top.plot(times, [s.weights.get(revision, 0) for s in samples], label=label)
        if any(revision in s.shadow for s in samples):
            top.plot(
                times,
                [s.shadow.get(revision, float("nan")) for s in samples],
                linestyle="--",
                color=line.get_color(),
                label=f"{labels.get(revision, '?')} shadow",
            )
        # no traffic in the window: a gap, not a zero
        bottom.plot(
            times,
            [s.error_rate.get(revision, float("nan")) * 100 for s in samples],
            label=label,
            color=line.get_color(),
        )
    top.set_ylabel("traffic weight (%)")
    top.set_ylim(-5, 105)
    top.legend(loc="center right")
    top.set_title("mlrollouts canary on the local playground")
    bottom.set_ylabel("5xx error rate (%)")
    bottom.set_xlabel("seconds since start")
    bottom.set_ylim(-5, 105)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def iris_answer(response: httpx.Response) -> tuple[str, int]:
    """Which revision answered (the router's header) and how."""
    return response.headers.get("x-mlrollouts-variant", "?"), response.status_code


# ---------------------------------------------------------------------------------------- scenario
class CanaryScenario(Scenario):
    """The steps of the canary scenario, usable one by one (the end-to-end tests drive them too)."""

    key: ClassVar[str] = "canary"

    def __init__(self, context: DemoContext, models: DemoModels) -> None:
        super().__init__(context)
        self.models = models
        self.manifest = yaml.safe_load(EXAMPLE.read_text())
        self.namespace = self.manifest["metadata"]["namespace"]
        self.name = self.manifest["metadata"]["name"]
        self.model = self.manifest["spec"]["model"]["name"]
        self.samples: list[Sample] = []
        # (time, desired weights, answers so far by (variant, code)) at every sample: the client's view
        self.answers: list[tuple[float, dict[str, int], Counter[tuple[str, int]]]] = []
        self.labels: dict[str, str] = {}
        bodies = [
            {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": row}]}
            for row in models.rows
        ]
        self.traffic = TrafficGenerator(
            self.kube, self.namespace, self.name, f"/v2/models/{self.model}/infer", bodies, iris_answer
        )

    def status(self) -> Status:
        obj = self.kube.get(API_VERSION, "ModelDeployment", self.namespace, self.name) or {}
        return obj.get("status") or {}

    def sample(self) -> str:
        s = take_sample(self.status(), self.playground.prometheus_url, self.model, self.context.elapsed())
        self.samples.append(s)
        self.answers.append((s.t, dict(s.weights), self.traffic.snapshot()))
        weights = " ".join(f"{self.labels.get(r, r)}={w}%" for r, w in sorted(s.weights.items()))
        return f"{s.phase:<11} step={s.step} {weights} {s.verdict}"

    def render(self) -> list[str]:
        header = f"canary — ModelDeployment {self.name}: {self.stage}"
        return [header, *render_sample(self.samples[-1], self.labels)] if self.samples else [header]

    def deploy(self, model: Path, version: str) -> None:
        body = json.loads(json.dumps(self.manifest))
        body["spec"]["model"]["uri"] = model.resolve().as_uri()
        body["spec"]["model"]["version"] = version
        if self.kube.get(API_VERSION, "ModelDeployment", self.namespace, self.name) is None:
            self.kube.create(body)
        else:
            self.kube.merge_patch(
                API_VERSION,
                "ModelDeployment",
                self.namespace,
                self.name,
                {"spec": {"model": {"uri": body["spec"]["model"]["uri"], "version": version}}},
            )

    def label_revision(self, status: Status, label: str) -> None:
        for key in ("candidateRevision", "stableRevision"):
            revision = status.get(key)
            if revision and revision not in self.labels:
                self.labels[revision] = label

    def run(self) -> None:
        v1 = self.bring_up_v1()
        v2 = self.promote_v2(v1)
        self.roll_back_v3(v2)
        self.result = "v2 promoted, v3 rolled back"

    def bring_up_v1(self) -> str:
        self.say("deploying v1")
        self.deploy(self.models.v1, "1")
        status = self.watch(
            lambda s: s.get("phase") == "Healthy" and s.get("stableRevision"), 120, "v1 comes up"
        )
        self.label_revision(status, "v1")
        v1: str = status["stableRevision"]
        self.watch(
            lambda s: entry_point(self.kube, self.namespace, self.name) is not None, 60, "router ready"
        )
        self.traffic.start()
        self.say(f"v1 is serving as revision {v1}; traffic started")
        return v1

    def promote_v2(self, v1: str) -> str:
        self.say("upgrading to v2 (better): shadow -> 10% -> 50% -> 100%")
        self.deploy(self.models.v2, "2")
        status = self.watch(
            lambda s: bool(s.get("candidateRevision")) or s.get("stableRevision") != v1,
            60,
            "v2 rollout starts",
        )
        self.label_revision(status, "v2")
        status = self.watch(
            lambda s: s.get("phase") == "Healthy" and s.get("stableRevision") not in (None, v1),
            180,
            "v2 canary",
        )
        v2: str = status["stableRevision"]
        self.labels.setdefault(v2, "v2")
        self.say(f"v2 promoted: revision {v2} is stable")
        return v2

    def roll_back_v3(self, v2: str) -> None:
        self.say("upgrading to v3 (broken): analysis should roll it back")
        self.deploy(self.models.v3, "3")
        status = self.watch(
            lambda s: bool(s.get("candidateRevision")) or s.get("phase") == "Degraded",
            60,
            "v3 rollout starts",
        )
        self.label_revision(status, "v3")
        status = self.watch(lambda s: s.get("phase") == "Degraded", 180, "v3 canary")
        if status.get("stableRevision") != v2:
            raise DemoError(
                f"after the rollback the stable revision is {status.get('stableRevision')}, not {v2}"
            )
        self.labels.setdefault(status.get("failedRevision") or "?", "v3")
        self.say(f"v3 rolled back: {status.get('message', '')}")
        # a few more seconds of traffic on v2 alone, for the plot
        settle = time.monotonic() + 5
        self.watch(lambda s: time.monotonic() >= settle, 30, "after the rollback")

    def outcome(self) -> list[str]:
        answers = ", ".join(
            f"{self.labels.get(v, v)} {c}: {n}" for (v, c), n in sorted(self.traffic.snapshot().items())
        )
        lines = [f"answers seen by the client: {answers or 'none'}"]
        if self.traffic.errors:
            lines.append(f"requests without an answer: {self.traffic.errors}")
        return lines

    def timeline(self) -> dict[str, Any]:
        return {
            "labels": self.labels,
            "samples": [asdict(s) for s in self.samples],
            "answers": {f"{v}/{c}": n for (v, c), n in self.traffic.snapshot().items()},
        }

    def plot(self, output_dir: Path) -> Path:
        png = output_dir / "rollout.png"
        plot(self.samples, self.labels, png)
        return png

    def stop(self) -> None:
        self.traffic.stop()
        super().stop()


def build(context: DemoContext, models_dir: Path) -> CanaryScenario:
    return CanaryScenario(context, train_demo_models(models_dir))
