"""`make demo`: a model canaried, promoted, and a broken one rolled back, live on the local playground.

1. Train three models on the iris data set that ships with scikit-learn: v1 (a deliberately weak
   logistic regression), v2 (a well-fitted one) and v3 (an ONNX graph that fails at inference, so
   every request it serves is a 500).
2. Start the playground (API emulator, Prometheus, process kubelet, operator).
3. Apply ``examples/canary/playground.yaml`` with v1, wait until it is Healthy, and send traffic to
   its entry point (the router) from a background thread.
4. Upgrade to v2: shadow → 10 % → 50 % → promoted. Upgrade to v3: rolled back by analysis.
5. Write the timeline (JSON) and a PNG plot of weights and error rates, and stop everything.
"""

from __future__ import annotations

import contextlib
import json
import random
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from mlrollouts.local.kube import ENDPOINTS, KubeClient, KubeError, ResourceRef
from mlrollouts.local.playground import Playground, PlaygroundError

MODELDEPLOYMENTS = ResourceRef("mlrollouts.io", "v1alpha1", "modeldeployments")
EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "canary" / "playground.yaml"


class DemoError(RuntimeError):
    pass


# ----------------------------------------------------------------------------- models
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


# ---------------------------------------------------------------------------- traffic
def entry_point(kube: KubeClient, namespace: str, service: str) -> str | None:
    """The URL of a ready endpoint of a Service (the playground has no cluster DNS)."""
    endpoints = kube.get(ENDPOINTS, namespace, service) or {}
    for subset in endpoints.get("subsets") or []:
        for address in subset.get("addresses") or []:
            port = subset["ports"][0]["port"]
            return f"http://{address['ip']}:{port}"
    return None


@dataclass
class TrafficGenerator:
    """Sends single-row V2 inference requests at ``rate`` per second; counts answers per variant and code."""

    kube: KubeClient
    namespace: str
    service: str
    model: str
    rows: list[list[float]]
    rate: float = 25.0
    counts: Counter[tuple[str, int]] = field(default_factory=Counter)
    errors: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        rng = random.Random(0)
        url = None
        next_lookup = 0.0
        with httpx.Client(timeout=5.0) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                if url is None or started >= next_lookup:
                    with contextlib.suppress(KubeError, httpx.HTTPError):
                        url = entry_point(self.kube, self.namespace, self.service) or url
                    next_lookup = started + 2.0
                if url is not None:
                    row = rng.choice(self.rows)
                    body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": row}]}
                    try:
                        response = client.post(f"{url}/v2/models/{self.model}/infer", json=body)
                        variant = response.headers.get("x-mlrollouts-variant", "?")
                        self.counts[(variant, response.status_code)] += 1
                    except httpx.HTTPError:
                        self.errors += 1
                        url = None
                self._stop.wait(max(0.0, 1.0 / self.rate - (time.monotonic() - started)))


# --------------------------------------------------------------------------- timeline
def prometheus_by_revision(prometheus: str, query: str) -> dict[str, float]:
    try:
        response = httpx.get(f"{prometheus}/api/v1/query", params={"query": query}, timeout=2.0)
        result = response.json()["data"]["result"]
    except (httpx.HTTPError, KeyError, ValueError):
        return {}
    values = {}
    for series in result:
        value = float(series["value"][1])
        if value == value:  # NaN: no traffic in the window
            values[series["metric"].get("revision", "?")] = value
    return values


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


def sample(kube: KubeClient, prometheus: str, namespace: str, name: str, model: str, t0: float) -> Sample:
    obj = kube.get(MODELDEPLOYMENTS, namespace, name) or {}
    status = obj.get("status") or {}
    weights = {w["revision"]: int(w.get("desired", 0)) for w in status.get("weights") or []}
    runs = (status.get("analysis") or {}).get("runs") or []
    verdict = ", ".join(f"{r['check']}={r['verdict']}" for r in runs[-2:])
    selector = f'model="{model}"'
    return Sample(
        t=round(time.monotonic() - t0, 1),
        phase=status.get("phase", "Pending"),
        step=status.get("currentStep"),
        stable=status.get("stableRevision"),
        candidate=status.get("candidateRevision"),
        weights=weights,
        shadow={w["revision"]: int(w["shadow"]) for w in status.get("weights") or [] if w.get("shadow")},
        rps=prometheus_by_revision(
            prometheus, f"sum by (revision) (rate(mlserving_requests_total{{{selector}}}[10s]))"
        ),
        error_rate=prometheus_by_revision(
            prometheus,
            f'sum by (revision) (rate(mlserving_requests_total{{{selector},code=~"5.."}}[10s])) '
            f"/ sum by (revision) (rate(mlserving_requests_total{{{selector}}}[10s]))",
        ),
        p99=prometheus_by_revision(
            prometheus,
            "histogram_quantile(0.99, sum by (revision, le) "
            f"(rate(mlserving_request_duration_seconds_bucket{{{selector}}}[10s])))",
        ),
        verdict=verdict,
    )


def render(s: Sample, labels: dict[str, str], title: str) -> str:
    lines = [
        f"mlrollouts demo — {title}",
        "",
        f"  t={s.t:6.1f}s  phase={s.phase:<12} step={s.step if s.step is not None else '-'}",
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
    return "\n".join(lines)


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


# ------------------------------------------------------------------------------- flow
class Demo:
    """The demo's steps, usable one by one (the end-to-end tests drive them too)."""

    def __init__(
        self, playground: Playground, models: DemoModels, output_dir: Path, live: bool = True
    ) -> None:
        self.playground = playground
        self.models = models
        self.output_dir = output_dir
        self.live = live and sys.stdout.isatty()
        self.kube = KubeClient(str(playground.kubeconfig))
        manifest = yaml.safe_load(EXAMPLE.read_text())
        self.manifest = manifest
        self.namespace = manifest["metadata"]["namespace"]
        self.name = manifest["metadata"]["name"]
        self.model = manifest["spec"]["model"]["name"]
        self.samples: list[Sample] = []
        # (time, desired weights, answers so far by (variant, code)) at every sample: the client's view
        self.answers: list[tuple[float, dict[str, int], Counter[tuple[str, int]]]] = []
        self.labels: dict[str, str] = {}
        self.t0 = time.monotonic()
        self.traffic = TrafficGenerator(self.kube, self.namespace, self.name, self.model, models.rows)
        self._last_print = 0.0

    def say(self, message: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.1f}s] {message}", flush=True)

    def status(self) -> dict[str, Any]:
        obj = self.kube.get(MODELDEPLOYMENTS, self.namespace, self.name) or {}
        return obj.get("status") or {}

    def deploy(self, model: Path, version: str) -> None:
        body = json.loads(json.dumps(self.manifest))
        body["spec"]["model"]["uri"] = model.resolve().as_uri()
        body["spec"]["model"]["version"] = version
        if self.kube.get(MODELDEPLOYMENTS, self.namespace, self.name) is None:
            self.kube.create(MODELDEPLOYMENTS, self.namespace, body)
        else:
            self.kube.merge_patch(
                MODELDEPLOYMENTS,
                self.namespace,
                self.name,
                {"spec": {"model": {"uri": body["spec"]["model"]["uri"], "version": version}}},
            )

    def watch(self, done: Any, timeout: float, title: str) -> dict[str, Any]:
        """Sample and show the rollout every second until ``done(status)``; fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.playground.supervise_once()
            status = self.status()
            s = sample(
                self.kube, self.playground.prometheus_url, self.namespace, self.name, self.model, self.t0
            )
            self.samples.append(s)
            self.answers.append((s.t, dict(s.weights), Counter(self.traffic.counts)))
            if self.live:
                print("\x1b[H\x1b[J" + render(s, self.labels, title), flush=True)
            elif time.monotonic() - self._last_print >= 5:
                self._last_print = time.monotonic()
                weights = " ".join(f"{self.labels.get(r, r)}={w}%" for r, w in sorted(s.weights.items()))
                self.say(f"{s.phase:<11} step={s.step} {weights} {s.verdict}")
            if done(status):
                return status
            time.sleep(1.0)
        raise DemoError(
            f"{title}: not done after {timeout:.0f}s; last status: {json.dumps(self.status())[:1500]}"
        )

    def label_revision(self, status: dict[str, Any], label: str) -> None:
        for key in ("candidateRevision", "stableRevision"):
            revision = status.get(key)
            if revision and revision not in self.labels:
                self.labels[revision] = label

    def run(self) -> None:
        self.say("deploying v1")
        self.deploy(self.models.v1, "1")
        status = self.watch(
            lambda s: s.get("phase") == "Healthy" and s.get("stableRevision"), 120, "v1 comes up"
        )
        self.label_revision(status, "v1")
        v1 = status["stableRevision"]
        self.watch(
            lambda s: entry_point(self.kube, self.namespace, self.name) is not None, 60, "router ready"
        )
        self.traffic.start()
        self.say(f"v1 is serving as revision {v1}; traffic started")

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
        v2 = status["stableRevision"]
        self.labels.setdefault(v2, "v2")
        self.say(f"v2 promoted: revision {v2} is stable")

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

    def finish(self) -> Path:
        self.traffic.stop()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        timeline = self.output_dir / "timeline.json"
        timeline.write_text(
            json.dumps(
                {
                    "labels": self.labels,
                    "samples": [s.__dict__ for s in self.samples],
                    "answers": {f"{v}/{c}": n for (v, c), n in self.traffic.counts.items()},
                },
                indent=1,
            )
        )
        png = self.output_dir / "rollout.png"
        plot(self.samples, self.labels, png)
        self.kube.close()
        return png


def run_demo(state_dir: Path, output_dir: Path, live: bool = True) -> int:
    output_dir = output_dir.resolve()
    print("training models (scikit-learn iris data set) ...", flush=True)
    models = train_demo_models(output_dir / "models")
    print("starting the playground (API emulator, Prometheus, process kubelet, operator) ...", flush=True)
    try:
        playground = Playground(state_dir).start()
    except PlaygroundError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    demo = Demo(playground, models, output_dir, live=live)
    try:
        demo.run()
        ok = True
    except (DemoError, KubeError, PlaygroundError) as exc:
        print(f"\ndemo failed: {exc}\nlogs: {playground.logs}", file=sys.stderr)
        ok = False
    finally:
        png = demo.finish()
        playground.stop()
    answers = ", ".join(
        f"{demo.labels.get(v, v)} {c}: {n}" for (v, c), n in sorted(demo.traffic.counts.items())
    )
    print(f"\nanswers seen by the client: {answers}")
    print(f"plot: {png}\ntimeline: {output_dir / 'timeline.json'}")
    if ok:
        print("demo finished: v2 promoted, v3 rolled back")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="mlrollouts-demo")
    parser.add_argument("--state-dir", type=Path, default=Path(".mlrollouts"))
    parser.add_argument("--output-dir", type=Path, default=Path("out/demo"))
    parser.add_argument("--no-live", action="store_true")
    args = parser.parse_args(argv)
    return run_demo(args.state_dir, args.output_dir, live=not args.no_live)


if __name__ == "__main__":
    sys.exit(main())
