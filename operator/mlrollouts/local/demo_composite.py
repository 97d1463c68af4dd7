"""The composite scenario of `make demo`: a credit score computed by a graph of models behind one
endpoint, one component canaried inside it, and the high-risk scores delivered as CloudEvents.

1. Train the credit models of ``examples/composite/`` (its ``train_models.py``: four components and
   a second version of ``credit-income``) and start an event sink process on a loopback port.
2. Apply the four ModelDeployments of ``examples/composite/components/`` and the CompositeModel
   ``credit-score`` of ``examples/composite/compositemodel.yaml``, its ``spec.events`` pointing at the
   sink (only scores above ``HIGH_RISK``); wait until the graph and every component are ready.
3. Check one answer of the graph against the model files (switch, then a linear ensemble), and
   send Open Inference Protocol V2 traffic to the graph's entry point.
4. Update ``credit-income`` to its v2 model: its canary runs inside the graph while the graph keeps
   answering; every client error is counted (there must be none).
5. Stop the traffic and compare the events the sink received with the high-risk answers the client
   saw; plot request rate, p99, the component's weights and the events (``composite.png``).
"""

from __future__ import annotations

import importlib.util
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, NamedTuple
from urllib.parse import urlsplit

import httpx
import yaml

from mlrollouts.core.names import API_VERSION
from mlrollouts.local import demo_scenario as scenario
from mlrollouts.local.demo_scenario import DemoContext, DemoError, Scenario, Status, TrafficGenerator
from mlrollouts.local.event_sink import EventSinkProcess

EXAMPLE_DIR = Path(__file__).resolve().parents[3] / "examples" / "composite"
HIGH_RISK = 0.5
"""Scores above this are delivered as events (the composite's ``spec.events.filter``)."""
CANARIED = "credit-income"
"""The component updated to its v2 model while the graph serves."""
CANARIED_NODE = "income"
"""The node of the graph that calls it."""
SAMPLE_ROWS = ([12.0, 65.0, 0.3, 0.0], [1.0, 30.0, 0.9, 2.0])
"""Applicants of the known-answer check: one goes through the ensemble, one (a thin file) does not."""


# ------------------------------------------------------------------------------------------ models
def example_training() -> ModuleType:
    """``examples/composite/train_models.py``, the example's own training code, as a module."""
    spec = importlib.util.spec_from_file_location(
        "composite_example_training", EXAMPLE_DIR / "train_models.py"
    )
    if spec is None or spec.loader is None:
        raise DemoError(f"cannot load {EXAMPLE_DIR / 'train_models.py'}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class CreditModels:
    directory: Path
    rows: list[list[float]]
    """Applicants for the traffic (drawn apart from the training data)."""

    def file(self, name: str) -> Path:
        return self.directory / f"{name}.skops"


def train_credit_models(directory: Path) -> CreditModels:
    training = example_training()
    training.train(directory)
    features, _ = training.applicants(300, seed=11)
    return CreditModels(directory.resolve(), [[float(v) for v in row] for row in features])


# --------------------------------------------------------------------------------------- manifests
def component_manifests(models: CreditModels) -> list[dict[str, Any]]:
    """The example's ModelDeployments, each pointing at its model file in ``models.directory``."""
    manifests = []
    for doc in yaml.safe_load_all((EXAMPLE_DIR / "components" / "modeldeployments.yaml").read_text()):
        if doc:
            file_name = Path(urlsplit(doc["spec"]["model"]["uri"]).path).name
            doc["spec"]["model"]["uri"] = (models.directory / file_name).as_uri()
            manifests.append(doc)
    return manifests


def composite_manifest(sink_url: str | None) -> dict[str, Any]:
    """The example's CompositeModel; with a sink, scores above HIGH_RISK go to it as CloudEvents."""
    manifest: dict[str, Any] = yaml.safe_load((EXAMPLE_DIR / "compositemodel.yaml").read_text())
    if sink_url is not None:
        manifest["spec"]["events"] = {
            "sink": sink_url,
            "mode": "structured",
            "filter": {"output": "value", "op": "gt", "value": HIGH_RISK},
        }
    return manifest


def expected_scores(
    manifest: dict[str, Any], predict: Callable[[str, list[float]], float], rows: list[list[float]]
) -> list[tuple[float, str]]:
    """What the example's graph (a Switch whose default is a linear Ensemble of Model nodes) answers
    for each row, computed from ``predict(component, row)``; with the path each row took."""
    spec = manifest["spec"]
    nodes = {node["name"]: node for node in spec["nodes"]}
    switch = nodes[spec["root"]]
    ensemble = nodes[switch["default"]]
    weights = ensemble["combiner"]["weights"]
    bias = ensemble["combiner"].get("bias", 0.0)
    answers = []
    for row in rows:
        case = next((c for c in switch["cases"] if _holds(c["when"], row)), None)
        if case is not None:
            node, when = nodes[case["node"]], case["when"]
            score = predict(node["modelDeployment"], row)
            test = f"feature {when.get('feature', 0)} {when['op']} {when['value']}"
            answers.append((score, f"{node['name']} {score:.4f} (switch case {test})"))
            continue
        parts = [predict(nodes[child]["modelDeployment"], row) for child in ensemble["children"]]
        score = sum(w * p for w, p in zip(weights, parts, strict=True)) + bias
        terms = " + ".join(
            f"{w:g}·{child} {p:.4f}" for w, child, p in zip(weights, ensemble["children"], parts, strict=True)
        )
        answers.append((score, f"{terms} (switch default: ensemble {ensemble['name']})"))
    return answers


def _holds(when: dict[str, Any], row: list[float]) -> bool:
    value, limit = row[int(when.get("feature", 0))], float(when["value"])
    tests = {"lt": value < limit, "le": value <= limit, "gt": value > limit, "ge": value >= limit}
    return tests.get(when["op"], value == limit if when["op"] == "eq" else value != limit)


def model_file_predictor(
    models: CreditModels, versions: dict[str, str]
) -> Callable[[str, list[float]], float]:
    """``predict(component, row)`` from the model files (each component at ``versions[component]``, default v1)."""
    import skops.io as sio

    loaded: dict[str, Any] = {}

    def predict(component: str, row: list[float]) -> float:
        name = f"{component}-{versions.get(component, 'v1')}"
        if name not in loaded:
            loaded[name] = sio.load(models.file(name))
        return float(loaded[name].predict([row])[0])

    return predict


def infer_body(rows: list[list[float]]) -> dict[str, Any]:
    data = [v for row in rows for v in row]
    return {"inputs": [{"name": "input", "shape": [len(rows), 4], "datatype": "FP64", "data": data}]}


# ---------------------------------------------------------------------------------------- answers
class GraphAnswer(NamedTuple):
    """How the client classifies one answer of the graph."""

    income: str
    """The variant (revision) of credit-income that took part, or "-" (a thin-file applicant)."""
    code: int
    event: bool
    """A score above HIGH_RISK: the router sends it to the sink."""


def graph_answer(response: httpx.Response) -> GraphAnswer:
    if response.status_code != 200:
        return GraphAnswer("-", response.status_code, False)
    body = response.json()
    components = ((body.get("parameters") or {}).get("graph") or {}).get("components") or {}
    income = (components.get(CANARIED_NODE) or {}).get("variant") or "-"
    values: list[Any] = next((o["data"] for o in body.get("outputs") or [] if o.get("name") == "value"), [])
    return GraphAnswer(income, 200, any(v > HIGH_RISK for v in values))


# ----------------------------------------------------------------------------------------- samples
@dataclass
class CompositeSample:
    t: float
    phase: str
    nodes: dict[str, str]
    component_phase: str
    component_step: int | None
    weights: dict[str, int]
    rps: float | None
    error_rate: float | None
    p99: float | None
    events: dict[str, float]
    """mlgraph_events_total by outcome (delivered, retried, dropped)."""
    received: int
    """Distinct events the sink received."""
    answers: int
    errors: int
    expected_events: int


def node_states(status: Status) -> dict[str, str]:
    states = {}
    for node in status.get("nodes") or []:
        reason = node.get("reason") or ""
        if reason.startswith("Nodes"):
            states[node["name"]] = "Ready" if node.get("ready") else "Waiting"
        else:
            states[node["name"]] = reason.removeprefix("Component") or ("Ready" if node.get("ready") else "-")
    return states


def graph_metrics(prometheus: str, graph: str) -> dict[str, Any]:
    selector = f'graph="{graph}"'
    total = f"sum(rate(mlgraph_requests_total{{{selector}}}[10s]))"
    return {
        "rps": scenario.prometheus_value(prometheus, total),
        "error_rate": scenario.prometheus_value(
            prometheus, f'sum(rate(mlgraph_requests_total{{{selector},code!~"2.."}}[10s])) / {total}'
        ),
        "p99": scenario.prometheus_value(
            prometheus,
            "histogram_quantile(0.99, sum by (le) "
            f"(rate(mlgraph_request_duration_seconds_bucket{{{selector}}}[10s])))",
        ),
        "events": scenario.prometheus_vector(
            prometheus, f"sum by (outcome) (mlgraph_events_total{{{selector}}})", "outcome"
        ),
    }


def _ms(seconds: float | None) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds is not None else "-"


def render_sample(s: CompositeSample, labels: dict[str, str]) -> list[str]:
    nodes = ", ".join(f"{name} {state}" for name, state in s.nodes.items()) or "-"
    split = ", ".join(f"{labels.get(r, '?')} ({r}) {w}%" for r, w in sorted(s.weights.items())) or "-"
    step = f" step {s.component_step}" if s.component_step is not None else ""
    events = ", ".join(f"{k} {int(v)}" for k, v in sorted(s.events.items())) or "none yet"
    return [
        f"  phase={s.phase:<9} nodes: {nodes}",
        f"  {CANARIED} {s.component_phase}{step}: {split}",
        f"  graph: {s.rps or 0:.1f} req/s, errors {(s.error_rate or 0) * 100:.1f}%, p99 {_ms(s.p99)};"
        f" client: {s.answers} answers, {s.errors} errors",
        f"  events: {s.received} received by the sink; the client saw {s.expected_events} results above"
        f" {HIGH_RISK}; router: {events}",
    ]


def plot(samples: list[CompositeSample], labels: dict[str, str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rate, weights, events) = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    times = [s.t for s in samples]
    nan = float("nan")
    rate.plot(times, [s.rps if s.rps is not None else nan for s in samples], label="requests/s")
    rate.set_ylabel("graph requests/s", color="tab:blue")
    latency = rate.twinx()
    latency.plot(
        times, [s.p99 * 1000 if s.p99 is not None else nan for s in samples], color="tab:red", label="p99"
    )
    latency.set_ylabel("graph p99 (ms)", color="tab:red")
    rate.set_title("mlrollouts composite credit-score on the local playground")
    for revision in sorted({r for s in samples for r in s.weights}):
        # before the revision exists: a gap, not a zero
        weight = [s.weights.get(revision, nan) for s in samples]
        weights.plot(times, weight, label=f"{labels.get(revision, '?')} ({revision})")
    weights.set_ylabel(f"{CANARIED} weight (%)")
    weights.set_ylim(-5, 105)
    weights.legend(loc="center right")
    events.plot(times, [s.received for s in samples], label="received by the sink")
    events.plot(
        times, [s.expected_events for s in samples], linestyle="--", label=f"client answers > {HIGH_RISK}"
    )
    events.set_ylabel("events")
    events.set_xlabel("seconds since start")
    events.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------------------- scenario
class CompositeScenario(Scenario):
    """The steps of the composite scenario, usable one by one (the end-to-end tests drive them too)."""

    key: ClassVar[str] = "composite"

    def __init__(self, context: DemoContext, models: CreditModels, sink: EventSinkProcess) -> None:
        super().__init__(context)
        self.models = models
        self.sink = sink
        self.components = component_manifests(models)
        self.manifest = composite_manifest(sink.url)
        if not any(
            n.get("modelDeployment") == CANARIED
            for n in self.manifest["spec"]["nodes"]
            if n["name"] == CANARIED_NODE
        ):
            raise DemoError(
                f"{EXAMPLE_DIR / 'compositemodel.yaml'}: no node {CANARIED_NODE!r} calls {CANARIED}"
            )
        self.namespace = self.manifest["metadata"]["namespace"]
        self.name = self.manifest["metadata"]["name"]
        self.samples: list[CompositeSample] = []
        self.labels: dict[str, str] = {}
        self.v1 = ""
        self.events_sent_by_checks = 0
        """Results above HIGH_RISK of requests sent outside the traffic (the known-answer check)."""
        self.traffic = TrafficGenerator(
            self.kube,
            self.namespace,
            self.name,
            f"/v2/models/{self.name}/infer",
            [infer_body([row]) for row in models.rows],
            graph_answer,
            rate=15.0,
        )

    # -- reading ---------------------------------------------------------------------------------------
    def status(self) -> Status:
        obj = self.kube.get(API_VERSION, "CompositeModel", self.namespace, self.name) or {}
        return obj.get("status") or {}

    def component_status(self, name: str) -> Status:
        obj = self.kube.get(API_VERSION, "ModelDeployment", self.namespace, name) or {}
        return obj.get("status") or {}

    def client_errors(self) -> int:
        return self.traffic.errors + sum(n for a, n in self.traffic.snapshot().items() if a.code != 200)

    def expected_events(self, answers: Counter[GraphAnswer] | None = None) -> int:
        """The events the sink should get: one per result above HIGH_RISK."""
        answers = self.traffic.snapshot() if answers is None else answers
        return self.events_sent_by_checks + sum(n for a, n in answers.items() if a.event)

    def sample(self) -> str:
        status, component = self.status(), self.component_status(CANARIED)
        metrics = graph_metrics(self.playground.prometheus_url, self.name)
        answers = self.traffic.snapshot()
        s = CompositeSample(
            t=self.context.elapsed(),
            phase=status.get("phase", "Pending"),
            nodes=node_states(status),
            component_phase=component.get("phase", "Pending"),
            component_step=component.get("currentStep"),
            weights={w["revision"]: int(w.get("desired", 0)) for w in component.get("weights") or []},
            received=self._received(),
            answers=sum(answers.values()),
            errors=self.client_errors(),
            expected_events=self.expected_events(answers),
            **metrics,
        )
        self.samples.append(s)
        split = " ".join(f"{self.labels.get(r, r)}={w}%" for r, w in sorted(s.weights.items()))
        return (
            f"{s.phase:<8} {CANARIED} {s.component_phase} {split}; {s.answers} answers, {s.errors} errors,"
            f" {s.received} events at the sink"
        )

    def _received(self) -> int:
        try:
            return int(self.sink.received(limit=0)["distinct"])
        except httpx.HTTPError:
            return self.samples[-1].received if self.samples else 0

    def render(self) -> list[str]:
        header = f"composite — CompositeModel {self.name}: {self.stage}"
        return [header, *render_sample(self.samples[-1], self.labels)] if self.samples else [header]

    # -- steps -----------------------------------------------------------------------------------------
    def run(self) -> None:
        self.bring_up()
        self.check_known_answer()
        self.traffic.start()
        self.say(f"sending V2 inference requests to /v2/models/{self.name}/infer")
        settle = time.monotonic() + 5
        self.watch(lambda s: time.monotonic() >= settle, 30, "graph serving")
        self.canary_inside_the_graph()
        self.traffic.stop()
        self.check_events()
        errors = self.client_errors()
        if errors:
            raise DemoError(f"the client got {errors} errors from {self.name} (expected none)")
        self.result = f"{CANARIED} v2 promoted inside {self.name}, 0 client errors"

    def apply(self) -> None:
        for manifest in [*self.components, self.manifest]:
            self.kube.create(manifest)

    def components_healthy(self) -> bool:
        names = [m["metadata"]["name"] for m in self.components]
        return all(self.component_status(name).get("phase") == "Healthy" for name in names)

    def bring_up(self) -> None:
        names = ", ".join(m["metadata"]["name"] for m in self.components)
        self.say(
            f"applying ModelDeployments {names} and CompositeModel {self.name} (events to {self.sink.url})"
        )
        self.apply()
        status = self.watch(
            lambda s: (
                s.get("phase") == "Ready"
                and self.components_healthy()
                and scenario.entry_point(self.kube, self.namespace, self.name) is not None
            ),
            180,
            "graph and components come up",
        )
        self.v1 = self.component_status(CANARIED)["stableRevision"]
        self.labels[self.v1] = "v1"
        self.say(
            f"{self.name} Ready: {len(status.get('nodes') or [])} nodes ready, "
            f"{len(self.components)} components Healthy"
        )

    def check_known_answer(self) -> None:
        """One request of two applicants: the graph's answers must be what the model files compute."""
        rows = [list(row) for row in SAMPLE_ROWS]
        url = scenario.entry_point(self.kube, self.namespace, self.name)
        response = httpx.post(f"{url}/v2/models/{self.name}/infer", json=infer_body(rows), timeout=10.0)
        if response.status_code != 200:
            raise DemoError(f"{self.name} answered {response.status_code}: {response.text[:500]}")
        got = next(o["data"] for o in response.json()["outputs"] if o["name"] == "value")
        expected = expected_scores(self.manifest, model_file_predictor(self.models, {}), rows)
        for row, value, (want, path) in zip(rows, got, expected, strict=True):
            if not math.isclose(value, want, abs_tol=1e-3):
                raise DemoError(
                    f"{self.name} answered {value} for {row}; the model files give {want:.4f} ({path})"
                )
            self.say(f"{self.name} answered {value:.4f} for applicant {row}; the model files give {path}")
        self.events_sent_by_checks += sum(1 for value in got if value > HIGH_RISK)

    def canary_inside_the_graph(self) -> list[CompositeSample]:
        """Update the component to v2 and wait until it is promoted; answer the samples taken meanwhile."""
        v1 = self.v1
        self.say(f"updating {CANARIED} to v2: its canary runs inside the graph while {self.name} answers")
        uri = self.models.file(f"{CANARIED}-v2").as_uri()
        patch = {"spec": {"model": {"uri": uri, "version": "2"}}}
        self.kube.merge_patch(API_VERSION, "ModelDeployment", self.namespace, CANARIED, patch)
        self.watch(
            lambda s: bool(self.component_status(CANARIED).get("candidateRevision")), 60, "canary starts"
        )
        self.labels.setdefault(self.component_status(CANARIED)["candidateRevision"], "v2")
        started = len(self.samples)

        def promoted(_: Status) -> bool:
            component = self.component_status(CANARIED)
            if component.get("phase") == "Degraded":
                raise DemoError(f"{CANARIED} v2 was rolled back: {component.get('message')}")
            return component.get("phase") == "Healthy" and component.get("stableRevision") not in (None, v1)

        self.watch(promoted, 240, f"{CANARIED} canary inside the graph")
        self.watch(
            lambda s: node_states(s).get(CANARIED_NODE) == "Ready", 30, f"{self.name} follows the promotion"
        )
        phases = Counter(s.phase for s in self.samples[started:])
        seen = ", ".join(f"{phase} in {n} of {sum(phases.values())} samples" for phase, n in phases.items())
        self.say(f"{CANARIED} v2 promoted; {self.name} during the canary: {seen}")
        return self.samples[started:]

    def check_events(self) -> None:
        """Wait until the sink has every event the client's answers imply (the router sends them
        asynchronously) and Prometheus has the router's count of them."""
        expected = self.expected_events()

        def arrived(_: Status) -> bool:
            delivered = self.samples[-1].events.get("delivered", 0) if self.samples else 0
            return self.samples[-1].received >= expected and delivered >= expected

        self.watch(arrived, 30, "events reach the sink")
        self.say(
            f"{self.samples[-1].received} CloudEvents received by the sink for {expected} results above "
            f"{HIGH_RISK}"
        )

    # -- results ---------------------------------------------------------------------------------------
    def outcome(self) -> list[str]:
        answers = self.traffic.snapshot()
        by_income = Counter[str]()
        for answer, n in answers.items():
            if answer.code == 200 and answer.income != "-":
                by_income[self.labels.get(answer.income, answer.income)] += n
        parts = ", ".join(f"{label}: {n}" for label, n in sorted(by_income.items())) or "none"
        thin = sum(n for a, n in answers.items() if a.code == 200 and a.income == "-")
        lines = [
            f"answers seen by the client: {sum(answers.values())} (through {CANARIED} {parts}; "
            f"without it: {thin}), errors: {self.client_errors()}"
        ]
        lines += [f"last error: {failure}" for failure in list(self.traffic.failures)[-3:]]
        if self.samples:
            last = self.samples[-1]
            router = ", ".join(f"{k} {int(v)}" for k, v in sorted(last.events.items())) or "none"
            lines.append(
                f"events: {last.received} received by the sink for {self.expected_events()} results above "
                f"{HIGH_RISK} (router: {router})"
            )
        return lines

    def timeline(self) -> dict[str, Any]:
        return {
            "labels": self.labels,
            "samples": [asdict(s) for s in self.samples],
            "answers": {
                f"{a.income}/{a.code}/{'event' if a.event else '-'}": n
                for a, n in self.traffic.snapshot().items()
            },
        }

    def plot(self, output_dir: Path) -> Path:
        plot(self.samples, self.labels, png := output_dir / "composite.png")
        return png

    def stop(self) -> None:
        self.traffic.stop()
        self.sink.stop()
        super().stop()


def build(context: DemoContext, models_dir: Path) -> CompositeScenario:
    models = train_credit_models(models_dir)
    sink = EventSinkProcess(context.playground.logs / "event-sink.log").start()
    return CompositeScenario(context, models, sink)
