"""`kubectl mlrollouts`: look at rollouts and steer them (get, status, promote, abort, retry, pause,
resume, history; `undo` lives in :mod:`mlrollouts.cli.undo`).

The commands talk to the Kubernetes API with the official client and any kubeconfig. Manual actions
are requests to the operator: ``promote``, ``abort``, ``retry`` and ``resume`` set the annotation
``mlrollouts.io/action``, which the operator carries out and removes. ``pause`` is part of the desired
state instead: it sets ``spec.rollout.paused`` (and ``resume`` clears it), so a pause survives
restarts and shows in diffs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, TypeVar

import yaml

from mlrollouts import __version__
from mlrollouts.api import COMPOSITE_MODEL, EXPERIMENT, KINDS, MODEL_DEPLOYMENT, ResourceKind, kind_named
from mlrollouts.cli import actions, wait
from mlrollouts.composite.components import ComponentRef, traffic_split
from mlrollouts.core.names import ACTION_ANNOTATION, COMPONENT_LABEL, OWNER_LABEL
from mlrollouts.core.times import parse_timestamp

REQUEST_TIMEOUT = 15.0
RECENT_CHECKS = 8

Object = dict[str, Any]
Objects = list[Object]
Found = TypeVar("Found")


class PluginError(Exception):
    """A problem worth one clear line to the user (exit status 1)."""


def resolve_kind(text: str) -> ResourceKind:
    try:
        return kind_named(text)
    except ValueError as exc:
        raise PluginError(str(exc)) from None


def split_ref(ref: str, default: ResourceKind | None) -> tuple[ResourceKind | None, str]:
    """``NAME`` or ``KIND/NAME`` (as kubectl writes them)."""
    if "/" in ref:
        kind_text, name = ref.split("/", 1)
        if not name:
            raise PluginError(f"{ref!r}: a name is missing after the '/'")
        return resolve_kind(kind_text), name
    return default, ref


# --- talking to the API ---------------------------------------------------------------------------


class Cluster:
    """The mlrollouts resources of one kubeconfig context (or of the pod's service account)."""

    USER_AGENT = f"kubectl-mlrollouts/{__version__}"

    def __init__(self, kubeconfig: str | None, context: str | None, namespace: str | None) -> None:
        from kubernetes.config import ConfigException

        from mlrollouts.controller.kube import Connection, SyncKube

        try:
            # a person's kubeconfig comes first (as for kubectl); the pod's account is the fallback
            connection = Connection.load(
                kubeconfig, context, prefer_in_cluster=False, user_agent=self.USER_AGENT
            )
        except (ConfigException, OSError) as exc:
            raise PluginError(f"cannot load the kubeconfig: {exc}") from None
        self.namespace = namespace or connection.namespace
        self.host = connection.server
        self.kube = SyncKube.connect(connection, timeout=REQUEST_TIMEOUT)

    def _call(self, what: str, request: Callable[[], Found | None]) -> Found:
        import httpx

        from mlrollouts.controller.kube import KubeError

        try:
            result = request()
        except KubeError as exc:
            if exc.status == 404:
                raise NotFound(f"{what} not found") from None
            if exc.status == 409:
                raise Conflict(f"{what} changed while it was being updated") from None
            raise PluginError(
                f"{what}: the API server answered {exc.status} {_reason(exc.status)}: {exc.message}"
            ) from None
        except httpx.TransportError as exc:
            raise PluginError(f"cannot reach the API server at {self.host}: {exc}") from None
        if result is None:
            raise NotFound(f"{what} not found")
        return result

    def get(self, kind: ResourceKind, name: str, namespace: str | None = None) -> Object:
        ns = namespace or self.namespace
        return self._call(
            f'{kind.kind} "{name}" in namespace "{ns}"',
            lambda: self.kube.get(kind.api_version, kind.kind, ns, name),
        )

    def list(self, kind: ResourceKind, all_namespaces: bool) -> list[Object]:
        namespace = None if all_namespaces else self.namespace
        items = self._call(kind.plural, lambda: self.kube.list(kind.api_version, kind.kind, namespace))
        for item in items:
            item.setdefault("kind", kind.kind)
        return items

    def list_children(self, api_version: str, kind: str, selector: Mapping[str, str]) -> Objects:
        """Built-in objects (Deployments, Pods) of the namespace that carry every label of ``selector``."""
        return self._call(f"{kind}s", lambda: self.kube.list(api_version, kind, self.namespace, selector))

    def patch(self, kind: ResourceKind, name: str, body: Object) -> Object:
        """A JSON merge patch of the object."""
        return self._call(
            f'{kind.kind} "{name}" in namespace "{self.namespace}"',
            lambda: self.kube.merge_patch(kind.api_version, kind.kind, self.namespace, name, body),
        )


class NotFound(PluginError):
    pass


class Conflict(PluginError):
    pass


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


# --- formatting (pure: objects and a time in, text out) ---------------------------------------------


def age(since: Any, now: datetime) -> str:
    """kubectl-style age: 45s, 12m, 3h, 5d."""
    moment = parse_timestamp(since)
    if moment is None:
        return "-"
    seconds = max(0, int((now - moment).total_seconds()))
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size * (2 if unit != "m" else 1):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    cells = [[str(c) for c in header]] + [
        ["-" if c is None or c == "" else str(c) for c in row] for row in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join(
        "   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def _number(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def weights_text(status: Object) -> str:
    parts = []
    for w in status.get("weights") or []:
        text = f"{w.get('revision')} {w.get('desired', 0)}%"
        verified = w.get("verified")
        if verified is not None and verified != w.get("desired"):
            text += f" (verified {verified}%)"
        if w.get("shadow"):
            text += f" (shadow {w['shadow']}%)"
        parts.append(text)
    return ", ".join(parts) or status.get("weightsSummary") or "-"


def printer_column(kind: ResourceKind, obj: Object, column: str) -> Any:
    """The value ``kubectl get -o wide`` shows in ``column`` for ``obj`` (the CRD's own JSON path),
    so the plugin and kubectl never disagree."""
    from mlrollouts.api.crd import PRINTER_COLUMNS

    found = next((c for c in PRINTER_COLUMNS.get(kind.kind, ()) if c.name == column), None)
    if found is None:
        return None
    value: Any = obj
    for part in found.json_path.lstrip(".").split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def step_text(spec: Object, status: Object) -> str:
    """The STEP column as kubectl shows it, with what that step does."""
    shown = printer_column(MODEL_DEPLOYMENT, {"spec": spec, "status": status}, "Step")
    steps = (spec.get("rollout") or {}).get("steps") or []
    index = status.get("currentStep")
    if index is None or not steps:
        return "-" if shown is None else str(shown)
    label = "-" if shown is None else str(shown)
    if not 0 <= index < len(steps):
        return f"{label}: all steps passed, the candidate goes to 100%"
    step = steps[index]
    if "shadow" in step:
        detail = f"shadow {step['shadow'].get('percent')}% for {step['shadow'].get('duration')}"
    elif "approval" in step:
        message = (step.get("approval") or {}).get("message")
        detail = f"approval: waiting for `{actions.command_prefix()} promote`" + (
            f" ({message})" if message else ""
        )
    else:
        detail = f"weight {step.get('weight')}%" + (
            f" for {step['duration']}" if step.get("duration") else ""
        )
    return f"{label}: {detail}"


def summary(obj: Object) -> str:
    """One line of what matters most for `get`."""
    status = obj.get("status") or {}
    kind = obj.get("kind")
    if kind == EXPERIMENT.kind:
        winner = (status.get("winner") or {}).get("variant")
        if winner:
            return f"winner {winner}"
        return (
            ", ".join(f"{v.get('name')} {v.get('weight', 0)}%" for v in status.get("variants") or []) or "-"
        )
    if kind == COMPOSITE_MODEL.kind:
        nodes = status.get("nodes") or []
        ready = sum(1 for n in nodes if n.get("ready"))
        return f"{ready}/{len(nodes)} nodes ready" + (
            f", {status['endpoint']}" if status.get("endpoint") else ""
        )
    return status.get("weightsSummary") or weights_text(status)


def render_list(items: list[Object], now: datetime, all_namespaces: bool) -> str:
    if not items:
        return "No resources found."
    header = (["NAMESPACE"] if all_namespaces else []) + ["KIND", "NAME", "PHASE", "SUMMARY", "AGE"]
    rows = []
    for obj in items:
        meta = obj.get("metadata") or {}
        row = [meta.get("namespace")] if all_namespaces else []
        kind = next((k for k in KINDS if k.kind == obj.get("kind")), None)
        row += [
            kind.short_names[0] if kind else obj.get("kind"),
            meta.get("name"),
            (obj.get("status") or {}).get("phase") or "Pending",
            summary(obj),
            age(meta.get("creationTimestamp"), now),
        ]
        rows.append(row)
    return table(header, rows)


def _conditions(status: Object, now: datetime) -> list[str]:
    conditions = status.get("conditions") or []
    if not conditions:
        return []
    rows = [
        [
            c.get("type"),
            c.get("status"),
            c.get("reason"),
            age(c.get("lastTransitionTime"), now),
            c.get("message"),
        ]
        for c in conditions
    ]
    return ["Conditions:", _indent(table(["TYPE", "STATUS", "REASON", "SINCE", "MESSAGE"], rows))]


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def render_status(obj: Object, now: datetime, graph: GraphView | None = None) -> str:
    """The status of one resource; ``graph`` adds a composite's components and latencies."""
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    spec = obj.get("spec") or {}
    kind = obj.get("kind", MODEL_DEPLOYMENT.kind)
    lines = [
        f"{kind} {meta.get('namespace')}/{meta.get('name')}",
        f"Phase:      {status.get('phase') or 'Pending'}"
        + (f"  ({status['message']})" if status.get("message") else ""),
    ]
    generation, observed = meta.get("generation"), status.get("observedGeneration")
    if generation is not None and (observed is None or observed < generation):
        lines.append(
            f"Generation: {generation} (operator has seen {observed if observed is not None else 'none'})"
        )
    action = (meta.get("annotations") or {}).get(ACTION_ANNOTATION)
    if action:
        lines.append(f"Pending:    {action} (requested, not yet carried out by the operator)")
    if kind == EXPERIMENT.kind:
        lines += _experiment_lines(spec, status)
    elif kind == COMPOSITE_MODEL.kind:
        lines += _composite_lines(spec, status, graph or GraphView())
    else:
        lines += _deployment_lines(spec, status, now)
    lines += _conditions(status, now)
    return "\n".join(lines)


def _deployment_lines(spec: Object, status: Object, now: datetime) -> list[str]:
    rollout = spec.get("rollout") or {}
    lines = [
        f"Strategy:   {rollout.get('strategy', 'Canary')}"
        + ("  (paused by spec.rollout.paused)" if rollout.get("paused") else ""),
        f"Stable:     {status.get('stableRevision') or '-'}",
        f"Candidate:  {status.get('candidateRevision') or '-'}",
        f"Step:       {step_text(spec, status)}"
        + (f"  (since {age(status.get('stepStartedAt'), now)})" if status.get("stepStartedAt") else ""),
        f"Weights:    {weights_text(status)}",
    ]
    if status.get("failedRevision"):
        lines.append(f"Rolled back: {status['failedRevision']}")
    analysis = status.get("analysis") or {}
    runs = (analysis.get("runs") or [])[-RECENT_CHECKS:]
    if runs and status.get("candidateRevision"):
        # the counters belong to the candidate in progress; after a rollback they start over
        lines.append(
            "Analysis:   "
            f"{analysis.get('consecutiveFailures', 0)} consecutive failures, "
            f"{analysis.get('totalFailures', 0)} in total, {analysis.get('inconclusiveCount', 0)} inconclusive"
        )
    if runs:
        rows = [
            [
                age(r.get("time"), now),
                r.get("check"),
                r.get("revision"),
                r.get("step") + 1 if isinstance(r.get("step"), int) else None,
                r.get("verdict"),
                _number(r.get("value")),
                _number(r.get("stableValue")),
                _number(r.get("samples")),
                r.get("message"),
            ]
            for r in reversed(runs)
        ]
        lines += [
            "Recent checks:",
            _indent(
                table(
                    ["AGO", "CHECK", "REVISION", "STEP", "VERDICT", "VALUE", "STABLE", "SAMPLES", "MESSAGE"],
                    rows,
                )
            ),
        ]
    else:
        lines.append("Recent checks: none yet")
    learning = status.get("learning")
    if learning:
        lines.append(
            f"Learning:   serving snapshot {learning.get('servingSnapshot', '-')}, "
            f"latest {learning.get('latestSnapshot', '-')}, last good {learning.get('lastGoodSnapshot', '-')}"
            + (f", pinned {learning['pinned']}" if learning.get("pinned") is not None else "")
        )
    return lines


def _experiment_lines(spec: Object, status: Object) -> list[str]:
    policy = (spec.get("policy") or {}).get("type") or "-"
    lines = [f"Policy:     {policy}"]
    variants = status.get("variants") or []
    if variants:
        rows = []
        for v in variants:
            interval = v.get("interval") or {}
            ci = (
                f"[{_number(interval.get('low'), 3)}, {_number(interval.get('high'), 3)}]"
                if interval
                else None
            )
            rows.append(
                [
                    v.get("name"),
                    f"{v.get('weight', 0)}%",
                    _number(v.get("requests")),
                    _number(v.get("rewardCount")),
                    _number(v.get("mean")),
                    ci,
                    _number(v.get("probabilityToBeBest"), 3),
                    v.get("guardrail"),
                ]
            )
        lines += [
            "Variants:",
            _indent(
                table(
                    ["VARIANT", "WEIGHT", "REQUESTS", "REWARDS", "MEAN", "INTERVAL", "P(BEST)", "GUARDRAIL"],
                    rows,
                )
            ),
        ]
    winner = status.get("winner")
    if winner:
        lines.append(f"Winner:     {winner.get('variant') or 'none'} ({winner.get('reason')})")
    return lines


@dataclass(frozen=True)
class GraphView:
    """What ``status`` shows of a composite besides its own status: its components as read (``None``:
    not found) and each node's p99 latency from Prometheus."""

    components: Mapping[ComponentRef, Object | None] = field(default_factory=dict)
    p99: Mapping[str, float] = field(default_factory=dict)
    latency_note: str = "p99 needs Prometheus: pass --prometheus-url (env MLROLLOUTS_PROMETHEUS_URL)"


_NODE_STATE = {
    "ComponentReady": "Ready",
    "ComponentProgressing": "Progressing",
    "ComponentRolledBack": "RolledBack",
    "ComponentNotReady": "NotReady",
    "ComponentMissing": "Missing",
    "ComponentUnreachable": "Unreachable",
    "NodesReady": "Ready",
    "NodesNotReady": "Waiting",
}
_COMPONENT_FIELDS = {"modelDeployment": MODEL_DEPLOYMENT.kind, "experiment": EXPERIMENT.kind}


def _component_of(node: Object) -> ComponentRef | None:
    for field_name, kind in _COMPONENT_FIELDS.items():
        if isinstance(node.get(field_name), str):
            return ComponentRef(kind, node[field_name])
    return None


def _edges(node: Object) -> list[tuple[str, str]]:
    """The nodes a node calls, each with what the call means (a sequence step, a switch case)."""
    kind, children = node.get("type"), [c for c in node.get("children") or [] if isinstance(c, str)]
    if kind == "Sequence":
        return [(child, f" (step {i + 1})") for i, child in enumerate(children)]
    edges = [(child, "") for child in children]
    stack = (node.get("combiner") or {}).get("node")
    if isinstance(stack, str):
        edges.append((stack, " (stack)"))
    for case in node.get("cases") or []:
        when = case.get("when") or {}
        test = (
            f"{when.get('input') or 'input'}[{when.get('feature', 0)}] {when.get('op')} {when.get('value')}"
        )
        if isinstance(case.get("node"), str):
            edges.append((case["node"], f" (if {test})"))
    if isinstance(node.get("default"), str):
        edges.append((node["default"], " (default)"))
    return edges


def _latency(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return f"{seconds * 1000:.3g}ms" if seconds < 1 else f"{seconds:.3g}s"


def graph_rows(spec: Object, status: Object, view: GraphView) -> list[list[Any]]:
    """The graph as a tree from the root (nodes no other node reaches come after it): one row per
    node with its state, its component, the component's traffic split and the node's p99."""
    nodes = {n.get("name"): n for n in spec.get("nodes") or [] if isinstance(n, dict)}
    states = {n.get("name"): n for n in status.get("nodes") or [] if isinstance(n, dict)}
    rows: list[list[Any]] = []
    expanded: set[str] = set()

    def walk(name: str, indent: str, branch: str, label: str) -> None:
        node, state = nodes.get(name) or {}, states.get(name) or {}
        ref = _component_of(node)
        kind = node.get("type") or "?"
        combiner = (node.get("combiner") or {}).get("type")
        message = state.get("message") if node else "not a node of the graph"
        edges = _edges(node)
        if edges and name in expanded:
            edges, message = [], "(shown above)"
        rows.append(
            [
                f"{indent}{branch}{name}{label}",
                f"{kind} {combiner}" if combiner else kind,
                _NODE_STATE.get(state.get("reason") or "", "Ready" if state.get("ready") else "-"),
                str(ref) if ref else None,
                traffic_split(ref, view.components.get(ref)) if ref else None,
                _latency(view.p99.get(name)),
                message,
            ]
        )
        expanded.add(name)
        below = indent + ("" if not branch else "   " if branch.startswith("└") else "│  ")
        for index, (child, child_label) in enumerate(edges):
            walk(child, below, "└─ " if index == len(edges) - 1 else "├─ ", child_label)

    for name in [spec.get("root"), *nodes]:
        if isinstance(name, str) and name not in expanded:
            walk(name, "", "", "")
    return rows


def _composite_lines(spec: Object, status: Object, view: GraphView) -> list[str]:
    lines = [f"Endpoint:   {status.get('endpoint') or '-'}"]
    events = (spec.get("events") or {}).get("sink")
    lines.append(
        f"Graph:      root {spec.get('root')}, timeout {spec.get('timeout', '30s')}, "
        f"max concurrency {spec.get('maxConcurrency', 16)}" + (f", events to {events}" if events else "")
    )
    header = ["NODE", "TYPE", "STATE", "COMPONENT", "SPLIT", "P99", "MESSAGE"]
    rows = graph_rows(spec, status, view)
    if rows:
        lines.append(_indent(table(header, rows)))
    lines.append(f"Latency:    {view.latency_note}")
    return lines


NODE_P99_QUERY = (
    "histogram_quantile(0.99, sum by (node, le) "
    '(rate(mlgraph_node_duration_seconds_bucket{{graph="{graph}"}}[{window}])))'
)
P99_WINDOW = "5m"


def node_p99(prometheus_url: str, graph: str, timeout: float = 5.0) -> tuple[dict[str, float], str]:
    """Each node's p99 over the last window, and a note saying where it came from (or why not)."""
    from mlrollouts.analysis import QueryError, prometheus_provider  # the Prometheus client is slow to import

    escaped = graph.replace("\\", "\\\\").replace('"', '\\"')
    query = NODE_P99_QUERY.format(graph=escaped, window=P99_WINDOW)
    try:
        provider = prometheus_provider(prometheus_url, timeout)
    except ValueError as exc:
        return {}, f"--prometheus-url: {exc}"
    samples = asyncio.run(provider.query_vector(query))
    if isinstance(samples, QueryError):
        return {}, f"p99 unavailable: {samples.reason}"
    p99 = {s.labels["node"]: s.value for s in samples if "node" in s.labels and math.isfinite(s.value)}
    where = f"p99 over the last {P99_WINDOW} from {prometheus_url}"
    return p99, where if p99 else f"{where}: no requests recorded"


def graph_view(cluster: Cluster, obj: Object, prometheus_url: str | None) -> GraphView | None:
    """The components and latencies of a composite (``None`` for other kinds)."""
    if obj.get("kind") != COMPOSITE_MODEL.kind:
        return None
    refs = {ref for n in (obj.get("spec") or {}).get("nodes") or [] if (ref := _component_of(n))}
    components: dict[ComponentRef, Object | None] = {}
    namespace = (obj.get("metadata") or {}).get("namespace")
    for ref in sorted(refs):
        try:
            components[ref] = cluster.get(ref.resource_kind, ref.name, namespace)
        except PluginError:  # missing or not readable: the node's own status says which
            components[ref] = None
    if not prometheus_url:
        return GraphView(components)
    p99, note = node_p99(prometheus_url, (obj.get("metadata") or {}).get("name") or "")
    return GraphView(components, p99, note)


def _attempt_rows(record: Object, now_is: str | None, now: datetime) -> list[list[Any]]:
    """The history rows of one revision record: one per attempt, the earlier ones as they ended
    (after a row counting those no longer kept), then the current one."""
    revision, version, uri = record.get("revision"), record.get("modelVersion"), record.get("modelUri")
    created = record.get("createdAt")

    def row(
        attempt: Any, started: Any, ended: Any, outcome: Any, message: Any, now_is: Any = None
    ) -> list[Any]:
        started_age = age(started, now) if started else None
        finished = age(ended, now) if ended else None
        return [revision, now_is, version, attempt, uri, started_age, finished, outcome, message]

    earlier = [a for a in record.get("previousAttempts") or [] if isinstance(a, dict)]
    attempt = record.get("attempt") or 1
    first_kept = (earlier[0].get("attempt") or 1) if earlier else attempt
    rows = []
    if first_kept > 1:
        dropped = first_kept - 1
        note = f"{dropped} earlier attempt{'s' if dropped > 1 else ''} not kept"
        rows.append(row("1" if dropped == 1 else f"1-{dropped}", None, None, None, note))
    for a in earlier:
        started = a.get("startedAt") or created
        rows.append(row(a.get("attempt"), started, a.get("finishedAt"), a.get("outcome"), a.get("message")))
    started = record.get("startedAt") or created
    finished = record.get("finishedAt")
    rows.append(row(attempt, started, finished, record.get("outcome"), record.get("message"), now_is))
    return rows


def render_history(obj: Object, now: datetime) -> str:
    status = obj.get("status") or {}
    revisions = status.get("revisions") or []
    current = {status.get("stableRevision"): "stable", status.get("candidateRevision"): "candidate"}
    rows = [row for r in revisions for row in _attempt_rows(r, current.get(r.get("revision")), now)]
    header = ["REVISION", "NOW", "VERSION", "ATTEMPT", "MODEL", "STARTED", "FINISHED", "OUTCOME", "MESSAGE"]
    text = table(header, rows) if rows else "No revisions recorded yet."
    snapshots = ((status.get("learning") or {}).get("snapshots")) or []
    if snapshots:
        snap_rows = [
            [
                s.get("version"),
                s.get("parent"),
                age(s.get("createdAt"), now),
                s.get("samples"),
                ", ".join(f"{k}={_number(v, 3)}" for k, v in sorted((s.get("metrics") or {}).items())),
                s.get("dataRange"),
            ]
            for s in snapshots
        ]
        text += "\n\nLearning snapshots:\n" + table(
            ["SNAPSHOT", "PARENT", "CREATED", "SAMPLES", "METRICS", "DATA"], snap_rows
        )
    return text


# --- commands ---------------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


def _cluster(args: argparse.Namespace) -> Cluster:
    return Cluster(args.kubeconfig, args.context, args.namespace)


def _get_target(cluster: Cluster, args: argparse.Namespace) -> tuple[Sequence[ResourceKind], str | None]:
    """``get``, ``get KIND``, ``get KIND NAME``, ``get KIND/NAME`` or ``get NAME`` (any kind)."""
    if not args.what:
        return KINDS, args.name
    if "/" in args.what:
        kind, name = split_ref(args.what, None)
        return ([kind] if kind else KINDS), args.name or name
    if args.name:
        return [resolve_kind(args.what)], args.name
    try:
        return [kind_named(args.what)], None
    except ValueError:
        pass  # not a kind: the name of a resource
    for kind in KINDS:
        try:
            cluster.get(kind, args.what)
        except NotFound:
            continue
        return [kind], args.what
    raise NotFound(
        f"{args.what!r} is neither a kind (mdep, mlexp, cmodel) nor the name of a ModelDeployment, "
        f'Experiment or CompositeModel in namespace "{cluster.namespace}"'
    )


def cmd_get(args: argparse.Namespace) -> int:
    cluster = _cluster(args)
    kinds, name = _get_target(cluster, args)
    if name:
        if len(kinds) != 1:
            raise PluginError("name a kind too, e.g. `get mdep NAME` or `get mdep/NAME`")
        items = [cluster.get(kinds[0], name)]
        items[0].setdefault("kind", kinds[0].kind)
    else:
        items = [item for kind in kinds for item in cluster.list(kind, args.all_namespaces)]
    if args.output == "json":
        print(json.dumps(items if not name else items[0], indent=2))
    elif args.output == "yaml":
        print(yaml.safe_dump(items if not name else items[0], sort_keys=False), end="")
    elif name and kinds[0] is MODEL_DEPLOYMENT:
        print(render_tree(cluster, items[0], _now()))
    else:
        print(render_list(items, _now(), args.all_namespaces))
    return 0


def render_tree(cluster: Cluster, obj: Object, now: datetime) -> str:
    """A ModelDeployment's summary and its revision -> Deployment -> pods tree."""
    from mlrollouts.builders.serving import SERVING_COMPONENT
    from mlrollouts.cli import tree

    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    name = meta.get("name") or ""
    lines = [
        f"Name:       {name}",
        f"Namespace:  {meta.get('namespace')}",
        f"Phase:      {status.get('phase') or 'Pending'}"
        + (f"  ({status['message']})" if status.get("message") else ""),
        f"Strategy:   {(spec.get('rollout') or {}).get('strategy', 'Canary')}",
        f"Step:       {step_text(spec, status)}",
        f"Weights:    {weights_text(status)}",
        "",
    ]
    selector = {OWNER_LABEL: f"{MODEL_DEPLOYMENT.kind}.{name}", COMPONENT_LABEL: SERVING_COMPONENT}
    children: dict[str, list[Object]] = {}
    for api_version, kind in (("apps/v1", "Deployment"), ("v1", "Pod")):
        try:
            children[kind] = cluster.list_children(api_version, kind, selector)
        except PluginError as exc:
            children[kind] = []
            lines.insert(-1, f"Note:       {kind}s not shown: {exc}")
    rows = tree.tree_rows(obj, children["Deployment"], children["Pod"], now)
    return "\n".join(lines) + "\n" + table(tree.HEADER, rows)


def _ref(args: argparse.Namespace, default: ResourceKind = MODEL_DEPLOYMENT) -> tuple[ResourceKind, str]:
    kind, name = split_ref(args.name, resolve_kind(args.kind) if getattr(args, "kind", None) else default)
    assert kind is not None
    return kind, name


def _deployment_ref(args: argparse.Namespace) -> tuple[ResourceKind, str]:
    """Actions and history apply to ModelDeployments (`NAME` or `mdep/NAME`)."""
    kind, name = _ref(args)
    if kind is not MODEL_DEPLOYMENT:
        raise PluginError(f"`{args.command}` applies to ModelDeployments, not to {kind.kind}s")
    return kind, name


def _named(cluster: Cluster, args: argparse.Namespace) -> tuple[ResourceKind, str]:
    """A bare ``NAME`` is whichever kind has it (ModelDeployment first), as ``KIND/NAME`` says."""
    kind, name = _ref(args)
    if "/" in args.name or getattr(args, "kind", None):
        return kind, name
    for candidate in KINDS:
        try:
            cluster.get(candidate, name)
        except NotFound:
            continue
        return candidate, name
    kinds = ", ".join(k.kind for k in KINDS[:-1]) + f" or {KINDS[-1].kind}"
    raise NotFound(f'{kinds} "{name}" in namespace "{cluster.namespace}" not found')


def cmd_status(args: argparse.Namespace) -> int:
    cluster = _cluster(args)
    kind, name = _named(cluster, args)
    if args.watch:
        return watch_status(cluster, kind, name, args.interval, args.timeout, args.prometheus_url)
    obj = cluster.get(kind, name)
    obj.setdefault("kind", kind.kind)
    print(render_status(obj, _now(), graph_view(cluster, obj, args.prometheus_url)), flush=True)
    if args.no_wait:
        return wait.exit_code(obj)
    return wait_until_settled(cluster, kind, name, args.interval, args.timeout, first=obj)


def _progress(kind: ResourceKind, obj: Object) -> str:
    status = obj.get("status") or {}
    step = step_text(obj.get("spec") or {}, status) if kind is MODEL_DEPLOYMENT and status else None
    return wait.progress_line(obj, step)


def wait_until_settled(
    cluster: Cluster, kind: ResourceKind, name: str, interval: float, timeout: float | None, first: Object
) -> int:
    """One line per change until the resource is Healthy (0), Degraded (1), gone (1) or the timeout
    passes (124), as ``kubectl argo rollouts status`` does."""
    deadline = None if not timeout else time.monotonic() + timeout
    obj: Object | None = first
    last_line = None
    try:
        while True:
            if obj is None:
                try:
                    obj = cluster.get(kind, name)
                except NotFound:
                    print(f'{kind.kind} "{name}" was deleted', file=sys.stderr)
                    return wait.EXIT_DEGRADED
                obj.setdefault("kind", kind.kind)
            line = _progress(kind, obj)
            if line != last_line:
                print(line, flush=True)
                last_line = line
            outcome = wait.settled(obj)
            if outcome is not None:
                return wait.EXIT_SUCCESS if outcome else wait.EXIT_DEGRADED
            if deadline is not None and time.monotonic() >= deadline:
                print(
                    f"error: timed out after {timeout:g}s waiting for {kind.kind} {name}: {line}",
                    file=sys.stderr,
                )
                return wait.EXIT_TIMEOUT
            pause = interval if deadline is None else max(0.0, min(interval, deadline - time.monotonic()))
            time.sleep(pause)
            obj = None
    except KeyboardInterrupt:
        return wait.EXIT_INTERRUPTED


def watch_status(
    cluster: Cluster,
    kind: ResourceKind,
    name: str,
    interval: float,
    timeout: float | None,
    prometheus_url: str | None = None,
) -> int:
    """Redraw the status when it changes (on a terminal also every interval, to refresh the ages)."""
    tty = sys.stdout.isatty()
    deadline = None if not timeout else time.monotonic() + timeout
    last_version = None
    try:
        while True:
            try:
                obj = cluster.get(kind, name)
            except NotFound:
                print(
                    f'{kind.kind} "{name}" was deleted' if last_version else f'{kind.kind} "{name}" not found'
                )
                return 1
            version = (obj.get("metadata") or {}).get("resourceVersion")
            if tty or version != last_version:
                frame = render_status(obj, _now(), graph_view(cluster, obj, prometheus_url))
                if tty:
                    sys.stdout.write("\x1b[H\x1b[2J")
                    frame += f"\n\n(watching every {interval:g}s; Ctrl-C to stop)"
                elif last_version is not None:
                    frame = "---\n" + frame
                print(frame, flush=True)
                last_version = version
            if deadline is not None and time.monotonic() >= deadline:
                return 0
            time.sleep(interval if deadline is None else max(0.0, min(interval, deadline - time.monotonic())))
    except KeyboardInterrupt:
        return 0


def request_action(
    cluster: Cluster,
    kind: ResourceKind,
    name: str,
    action: str,
    force: bool,
    spec_patch: Object | None = None,
    refuse: Callable[[Object], str | None] | None = None,
) -> Object:
    """Set the action annotation (and optionally patch the spec) in one merge patch guarded by the
    object's resourceVersion, so a concurrent change is never overwritten blindly. ``refuse`` says,
    from the object as read just before the patch, why the request would change nothing."""
    for _attempt in range(3):
        obj = cluster.get(kind, name)
        meta = obj.get("metadata") or {}
        pending = (meta.get("annotations") or {}).get(ACTION_ANNOTATION)
        if pending and pending != action and not force:
            raise PluginError(
                f'{kind.kind} "{name}": the action {pending!r} is still pending (the operator has not carried '
                "it out yet); wait, or use --force to replace it"
            )
        why_not = refuse(obj) if refuse else None
        if why_not:
            raise PluginError(f"{kind.kind} {cluster.namespace}/{name}: nothing done: {why_not}")
        body: Object = {"metadata": {"resourceVersion": meta.get("resourceVersion")}}
        if action:
            body["metadata"]["annotations"] = {ACTION_ANNOTATION: action}
        if spec_patch:
            body["spec"] = spec_patch
        try:
            cluster.patch(kind, name, body)
        except Conflict:
            continue
        return obj
    raise PluginError(f'{kind.kind} "{name}" keeps changing; try again')


def promise(action: str, obj: Object) -> str:
    """What the operator will do with ``action``, said before it does it."""
    status, spec = obj.get("status") or {}, obj.get("spec") or {}
    candidate = status.get("candidateRevision")
    if action == actions.PROMOTE_FULL:
        return f"the remaining steps are skipped and revision {candidate} goes to 100 %"
    if action == actions.PROMOTE:
        index, total = status.get("currentStep") or 0, actions.step_count(spec)
        passed = "the approval" if actions.pause_reason(obj) == actions.AWAITING_APPROVAL else "the step"
        after = "then the candidate goes to 100 %" if index + 1 >= total else "then the next step runs"
        return f"{passed} in force ({step_text(spec, status)}) is passed, {after}"
    if action == actions.ABORT:
        return f"revision {candidate} is rolled back; traffic returns to {status.get('stableRevision')}"
    if action == actions.RETRY:
        return f"revision {status.get('failedRevision')} is rolled out again from the first step"
    return f"the hold ({actions.pause_reason(obj)}) ends and the rollout continues"


def _action_command(action: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        kind, name = _deployment_ref(args)
        cluster = _cluster(args)
        wanted = actions.PROMOTE_FULL if action == actions.PROMOTE and args.full else action
        prefix = actions.command_prefix()
        obj = request_action(
            cluster, kind, name, wanted, args.force, refuse=lambda o: actions.refusal(wanted, o, prefix)
        )
        print(
            f"{kind.kind} {cluster.namespace}/{name}: {wanted} requested (phase {actions.phase_of(obj)}): "
            f"{promise(wanted, obj)}"
        )
        return 0

    return run


def cmd_pause(args: argparse.Namespace) -> int:
    kind, name = _deployment_ref(args)
    cluster = _cluster(args)
    request_action(
        cluster,
        kind,
        name,
        "",
        force=True,
        spec_patch={"rollout": {"paused": True}},
        refuse=actions.pause_refusal,
    )
    print(
        f"{kind.kind} {cluster.namespace}/{name} paused: spec.rollout.paused=true "
        f"(resume with `{actions.command_prefix()} resume {name}`)"
    )
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    """Clear ``spec.rollout.paused`` when set; ask the operator to end a hold of its own (an approval,
    inconclusive analysis) with the annotation, and only then: a spec pause ends with the spec."""
    kind, name = _deployment_ref(args)
    cluster = _cluster(args)
    obj = cluster.get(kind, name)
    paused, held = actions.spec_paused(obj), actions.operator_hold(obj)
    request_action(
        cluster,
        kind,
        name,
        actions.RESUME if held else "",
        args.force,
        spec_patch={"rollout": {"paused": False}} if paused else None,
        refuse=actions.resume_refusal,
    )
    done = ["spec.rollout.paused=false"] if paused else []
    done += ["resume requested (the operator ends its hold)"] if held else []
    print(f"{kind.kind} {cluster.namespace}/{name}: {' and '.join(done)}")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    kind, name = _deployment_ref(args)
    cluster = _cluster(args)
    print(render_history(cluster.get(kind, name), _now()))
    return 0


# --- argument parsing -------------------------------------------------------------------------------


def _seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for unit in ("ms", "s", "m", "h"):
        if text.endswith(unit) and text[: -len(unit)].replace(".", "", 1).isdigit():
            return float(text[: -len(unit)]) * units[unit]
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: use e.g. 2, 500ms, 30s, 5m") from None


def _connection_flags() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("cluster")
    group.add_argument(
        "--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)"
    )
    group.add_argument("--context", default=None, help="kubeconfig context (default: the current one)")
    group.add_argument("-n", "--namespace", default=None, help="namespace (default: the context's)")
    return parent


def _guard(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except PluginError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

    return run


DEPLOYMENT_NAME = "ModelDeployment NAME (or mdep/NAME)"
FORCE_HELP = "replace another action that is still pending"


def add_command(
    subparsers: Any,
    name: str,
    conn: argparse.ArgumentParser,
    handler: Callable[[argparse.Namespace], int],
    *,
    help: str,
    description: str | None = None,
    target: str = DEPLOYMENT_NAME,
) -> argparse.ArgumentParser:
    """A command on one resource: the cluster flags, its ``name`` argument (``target`` says what
    it names), and a :class:`PluginError` reported in one line; ``description`` defaults to ``help``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, parents=[conn], help=help, description=help if description is None else description
    )
    parser.add_argument("name", help=target)
    parser.set_defaults(handler=_guard(handler))
    return parser


def register(subparsers: Any) -> None:
    conn = _connection_flags()
    kind_help = "kind of NAME: ModelDeployment (mdep, default), Experiment (mlexp), CompositeModel (cmodel)"

    get = subparsers.add_parser(
        "get",
        parents=[conn],
        help="list ModelDeployments, Experiments and CompositeModels",
        description="List mlrollouts resources with their phase; `get KIND`, `get KIND NAME` or `get KIND/NAME`.",
    )
    get.add_argument("what", nargs="?", help="a kind (mdep, mlexp, cmodel) or KIND/NAME")
    get.add_argument("name", nargs="?", help="a resource name")
    get.add_argument("-A", "--all-namespaces", action="store_true", help="list across all namespaces")
    get.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")
    get.set_defaults(handler=_guard(cmd_get))

    status = add_command(
        subparsers,
        "status",
        conn,
        cmd_status,
        help="phase, step, weights and recent checks of one resource; waits until it is done",
        description="Show the state of a resource, then wait until it is done, printing one line per change: "
        "exit 0 when Healthy (an Experiment: Running, Concluded or Stopped; a CompositeModel: Ready), "
        "1 when Degraded, 124 when --timeout passes first. --no-wait shows it once; --watch is a live "
        "view that follows every change.",
        target="NAME or KIND/NAME",
    )
    status.add_argument("-k", "--kind", default=None, help=kind_help)
    status.add_argument(
        "-w",
        "--watch",
        action="store_true",
        help="a live view of the whole status until Ctrl-C (or --timeout)",
    )
    status.add_argument(
        "--no-wait", action="store_true", help="show the status once (exit 1 if Degraded, else 0)"
    )
    status.add_argument("--interval", type=_seconds, default=1.0, help="how often to look (default 1s)")
    status.add_argument(
        "--timeout",
        type=_seconds,
        default=None,
        help="give up after this long (exit 124); 0 or unset: wait for as long as it takes",
    )
    status.add_argument(
        "--prometheus-url",
        default=os.environ.get("MLROLLOUTS_PROMETHEUS_URL"),
        help="Prometheus for the p99 of each node of a CompositeModel (env MLROLLOUTS_PROMETHEUS_URL)",
    )

    action_help = {
        "promote": "pass the current step (an approval, an analysis hold, or a running step); "
        "--full skips every remaining step",
        "abort": "roll the candidate back; traffic returns to the stable revision",
        "retry": "roll out a revision that was rolled back once more",
    }
    for action, text in action_help.items():
        description = (
            f"{text[0].upper()}{text[1:]}: sets the annotation {ACTION_ANNOTATION}="
            + ("promote (promote-full with --full)" if action == "promote" else action)
            + "; the operator carries it out and removes it. Refused, with the reason, when it would "
            "change nothing (e.g. no rollout in progress)."
        )
        parser = add_command(
            subparsers, action, conn, _action_command(action), help=text, description=description
        )
        parser.add_argument("--force", action="store_true", help=FORCE_HELP)
        if action == "promote":
            parser.add_argument(
                "--full", action="store_true", help="skip every remaining step: the candidate goes to 100 %%"
            )
    add_command(
        subparsers,
        "pause",
        conn,
        cmd_pause,
        help="hold the rollout at its current step (sets spec.rollout.paused)",
        description="Hold the rollout where it is by setting spec.rollout.paused=true. For resources managed "
        "by GitOps, set the field in Git instead: a sync would revert this.",
    )
    resume = add_command(
        subparsers,
        "resume",
        conn,
        cmd_resume,
        help="continue a paused or held rollout",
        description=f"Clear spec.rollout.paused when set, and set {ACTION_ANNOTATION}=resume when the operator "
        "holds the rollout itself (an approval step, inconclusive analysis). Refused when nothing is paused.",
    )
    resume.add_argument("--force", action="store_true", help=FORCE_HELP)
    add_command(
        subparsers,
        "history",
        conn,
        cmd_history,
        help="revisions of a ModelDeployment and their outcomes",
        description="Every revision rolled out (promoted, rolled back, superseded) and the learning snapshots.",
    )
