"""The operator's own Prometheus metrics (``mlrollouts_*``), served on ``--metrics-port``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)


def _per_resource(metric: type[Gauge] | type[Counter], name: str, documentation: str, label: str) -> Any:
    """A metric with one series per resource (``namespace``, ``name``) and ``label``."""
    return metric(name, documentation, ["namespace", "name", label], registry=REGISTRY)


PHASE = _per_resource(
    Gauge, "mlrollouts_phase", "1 for the current phase of a ModelDeployment, 0 for the others", "phase"
)
WEIGHT = _per_resource(
    Gauge, "mlrollouts_weight_percent", "Desired traffic weight of a revision, percent", "revision"
)
ANALYSIS = Counter(
    "mlrollouts_analysis_results",
    "Check results by verdict",
    ["namespace", "name", "check", "verdict"],
    registry=REGISTRY,
)
RECONCILE_SECONDS = Histogram(
    "mlrollouts_reconcile_duration_seconds",
    "Duration of one observe-decide-apply pass",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    "mlrollouts_reconcile_errors", "Reconcile passes that failed, by cause", ["cause"], registry=REGISTRY
)
TRANSITIONS = _per_resource(
    Counter, "mlrollouts_rollout_events", "Rollout events by reason (Promoted, RolledBack, ...)", "reason"
)
EXPERIMENT_PHASE = _per_resource(
    Gauge,
    "mlrollouts_experiment_phase",
    "1 for the current phase of an Experiment, 0 for the others",
    "phase",
)
EXPERIMENT_WEIGHT = _per_resource(
    Gauge,
    "mlrollouts_experiment_weight_percent",
    "Traffic weight of an Experiment's variant, percent",
    "variant",
)
EXPERIMENT_BEST = _per_resource(
    Gauge,
    "mlrollouts_experiment_probability_to_be_best",
    "Posterior probability that the variant is the best one, at the last evaluation",
    "variant",
)
EXPERIMENT_EVENTS = _per_resource(
    Counter,
    "mlrollouts_experiment_events",
    "Experiment events by reason (WeightChanged, GuardrailBreached, Concluded, ...)",
    "reason",
)
COMPOSITE_PHASE = _per_resource(
    Gauge,
    "mlrollouts_composite_phase",
    "1 for the current phase of a CompositeModel, 0 for the others",
    "phase",
)
COMPOSITE_NODE_READY = _per_resource(
    Gauge, "mlrollouts_composite_node_ready", "1 when a node of a CompositeModel is ready, else 0", "node"
)
COMPOSITE_EVENTS = _per_resource(
    Counter,
    "mlrollouts_composite_events",
    "CompositeModel events by reason (GraphApplied, NodeReady, ComponentMissing, ...)",
    "reason",
)


def set_phase(gauge: Gauge, namespace: str, name: str, phases: Iterable[str], current: str) -> None:
    """One gauge series per phase: 1 for the current one, 0 for the others."""
    for phase in phases:
        gauge.labels(namespace, name, phase).set(1 if phase == current else 0)


def set_values(gauge: Gauge, namespace: str, name: str, values: Mapping[str, float]) -> None:
    """The gauge's series of one resource become exactly ``values`` (vanished keys are dropped)."""
    for labels in list(gauge._metrics):
        if labels[:2] == (namespace, name) and labels[2] not in values:
            gauge.remove(*labels)
    for key, value in values.items():
        gauge.labels(namespace, name, key).set(value)


def forget(namespace: str, name: str, gauges: Iterable[Gauge]) -> None:
    """Drop every series of one resource (it was deleted)."""
    for gauge in gauges:
        for labels in list(gauge._metrics):
            if labels[:2] == (namespace, name):
                gauge.remove(*labels)


def serve(port: int, host: str = "0.0.0.0") -> None:
    start_http_server(port, addr=host, registry=REGISTRY)
