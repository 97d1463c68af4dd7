"""The operator's own Prometheus metrics (``mlrollouts_*``), served on ``--metrics-port``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from mlrollouts.rollout import Phase

REGISTRY = CollectorRegistry(auto_describe=True)

PHASE = Gauge(
    "mlrollouts_phase",
    "1 for the current phase of a ModelDeployment, 0 for the others",
    ["namespace", "name", "phase"],
    registry=REGISTRY,
)
WEIGHT = Gauge(
    "mlrollouts_weight_percent",
    "Desired traffic weight of a revision, percent",
    ["namespace", "name", "revision"],
    registry=REGISTRY,
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
    "mlrollouts_reconcile_errors",
    "Reconcile passes that failed, by cause",
    ["cause"],
    registry=REGISTRY,
)
TRANSITIONS = Counter(
    "mlrollouts_rollout_events",
    "Rollout events by reason (Promoted, RolledBack, ...)",
    ["namespace", "name", "reason"],
    registry=REGISTRY,
)


def record_state(namespace: str, name: str, phase: Phase, weights: dict[str, int]) -> None:
    for p in Phase:
        PHASE.labels(namespace, name, p.value).set(1 if p is phase else 0)
    for child in list(WEIGHT._metrics):  # drop revisions that no longer carry a weight
        if child[:2] == (namespace, name) and child[2] not in weights:
            WEIGHT.remove(*child)
    for revision, weight in weights.items():
        WEIGHT.labels(namespace, name, revision).set(weight)


def forget(namespace: str, name: str) -> None:
    for metric in (PHASE, WEIGHT):
        for child in list(metric._metrics):
            if child[:2] == (namespace, name):
                metric.remove(*child)


def serve(port: int, host: str = "0.0.0.0") -> None:
    start_http_server(port, addr=host, registry=REGISTRY)
