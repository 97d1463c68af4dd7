"""Operator latency and footprint on the API emulator.

What it measures, with the real operator process (``mlrollouts operator run``, production defaults:
driver re-check 30 s, poll 1 s) against the API emulator and a stand-in for the kubelet that reports every
Deployment ready:

- ``spec change -> children applied``: a ModelDeployment's model changes (strategy Immediate); time
  until the new revision's Deployment and Service exist and the route table names the new revision.
  Measured with 1 ModelDeployment and again with N (default 300) ModelDeployments present.
- steady state with N ModelDeployments (all Healthy): operator RSS and CPU share over a window.
- ``failing check -> weight 0``: a canary whose candidate (an exporter process scraped by a real
  Prometheus) answers 30 % errors, failureLimit 1; time from the failing analysis run (its timestamp
  in status) until the route table gives the candidate weight 0. Skipped when ``prometheus`` is absent.

Targets: p95 <= 1 s at 300, RSS <= 200 MB, rollback within one analysis interval after the failure
limit is reached. The machine is shared with other jobs: absolute numbers are noisy.

    python tests/bench/bench_operator.py [--resources 300] [--changes 20] [--steady 20]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE.parents[1] / "integration" / "operator"))

from harness import Cluster, start_operator  # noqa: E402
from rollout_support import revision_of, with_model  # noqa: E402

from mlserving.router.table import ROUTES_CONFIGMAP_KEY, RouteTable  # noqa: E402
from support import wait_until  # noqa: E402


def immediate(name: str, uri: str) -> dict:
    return {
        "apiVersion": "mlrollouts.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": uri, "format": "onnx"},
            "serving": {"replicas": 1},
            "rollout": {"strategy": "Immediate", "scaleDownDelay": "5s"},
        },
    }


def route_weights(cluster: Cluster, ns: str, name: str) -> dict[str, float]:
    cm = cluster.http.get(f"/api/v1/namespaces/{ns}/configmaps/{name}-routes")
    if cm.status_code != 200:
        return {}
    table = RouteTable.from_yaml(cm.json()["data"][ROUTES_CONFIGMAP_KEY])
    return {v.name: v.weight for v in table.routes[0].variants}


def children_applied(cluster: Cluster, ns: str, name: str, rev: str) -> bool:
    # the route table is written last in a pass's listing; check it first and stop early (light polling)
    return (
        rev in route_weights(cluster, ns, name)
        and cluster.http.get(f"/apis/apps/v1/namespaces/{ns}/deployments/{name}-{rev}").status_code == 200
        and cluster.http.get(f"/api/v1/namespaces/{ns}/services/{name}-{rev}").status_code == 200
    )


def measure_changes(cluster: Cluster, ns: str, names: list[str], rounds: int) -> list[float]:
    latencies = []
    for i in range(rounds):
        name = names[i % len(names)]
        obj = immediate(name, f"file:///models/{name}-v{i + 2}.onnx")
        rev = revision_of(obj)
        t0 = time.perf_counter()
        cluster.patch(ns, name, {"spec": {"model": obj["spec"]["model"]}})
        wait_until(lambda n=name, r=rev: children_applied(cluster, ns, n, r), timeout=60, interval=0.02)
        latencies.append(time.perf_counter() - t0)
        wait_until(
            lambda n=name, r=rev: cluster.status(ns, n).get("stableRevision") == r, timeout=60, interval=0.1
        )
    return latencies


def proc_stats(pid: int) -> tuple[float, float]:
    """(RSS in MB, user+system CPU seconds) of a process, from /proc."""
    rss_kb = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return rss_kb / 1024, (int(fields[11]) + int(fields[12])) / ticks


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def rollback_latency(workdir: Path) -> tuple[float, float] | None:
    if shutil.which("prometheus") is None:
        return None
    from rollout_support import ERRORS, manifest

    from support.exporters import serving_exporter
    from support.prometheus import PrometheusServer

    (workdir / "rb").mkdir(exist_ok=True)
    prom = PrometheusServer(workdir / "prometheus").start()
    cluster = proc = None
    try:
        cluster = Cluster(workdir / "rb")
        proc, _ = start_operator(cluster, workdir, prom.url)
        cluster.create_namespace("rb")
        base = manifest("rb", "file:///models/rb-1.onnx", checks=[ERRORS], failureLimit=1)
        base["spec"]["rollout"]["steps"] = [{"weight": 20, "duration": "30s"}]
        nxt = with_model(base, "file:///models/rb-2.onnx")
        stable, candidate = revision_of(base), revision_of(nxt)
        good = {"rps": 40, "latency": 0.02}
        with (
            serving_exporter(workdir, model="rb", revision=stable, **good) as s,
            serving_exporter(workdir, model="rb", revision=candidate, **good, error_ratio=0.3) as c,
        ):
            prom.set_targets([([s.target, c.target], {})])
            prom.wait_for_series(f'mlserving_requests_total{{model="rb",revision="{candidate}"}}')
            cluster.create("rb", base)
            wait_until(lambda: cluster.status("rb", "rb").get("phase") == "Healthy", timeout=60)
            cluster.patch("rb", "rb", {"spec": {"model": nxt["spec"]["model"]}})
            wait_until(
                lambda: route_weights(cluster, "rb", "rb").get(candidate) == 20, timeout=60, interval=0.01
            )
            wait_until(
                lambda: route_weights(cluster, "rb", "rb").get(candidate) == 0, timeout=60, interval=0.005
            )
            seen_zero = time.time()
            # the route table is applied before the status patch of the same pass: wait for the status
            status = wait_until(
                lambda: (s := cluster.status("rb", "rb")).get("phase") == "Degraded" and s, timeout=30
            )
            fail = next(r for r in status["analysis"]["runs"] if r["verdict"] == "Fail")
            failed_at = datetime.fromisoformat(fail["time"].replace("Z", "+00:00")).timestamp()
            interval = 2.0
            return seen_zero - failed_at, interval
    finally:
        if proc is not None:
            proc.stop()
        if cluster is not None:
            cluster.stop()
        prom.stop()


class Table:
    """Rows printed as soon as they are measured (a long run keeps what it has if a later part fails)."""

    WIDTH = 58

    def __init__(self) -> None:
        print(f"{'measure':<{self.WIDTH}}  value", flush=True)

    def append(self, row: tuple[str, str, str]) -> None:
        label, a, b = row
        print(f"{label:<{self.WIDTH}}  {a}  {b}".rstrip(), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--resources", type=int, default=300)
    parser.add_argument("--changes", type=int, default=20, help="spec changes measured per scenario")
    parser.add_argument("--steady", type=float, default=20.0, help="seconds of steady-state sampling")
    args = parser.parse_args()
    rows = Table()
    with tempfile.TemporaryDirectory(prefix="bench-operator-") as tmp:
        workdir = Path(tmp)
        cluster = Cluster(workdir, kubelet_interval=2.0)
        proc, _ = start_operator(cluster, workdir, None, tick=30.0, poll=1.0)
        try:
            cluster.create_namespace("bench")
            cluster.create("bench", immediate("solo", "file:///models/solo-1.onnx"))
            wait_until(lambda: cluster.status("bench", "solo").get("phase") == "Healthy", timeout=60)
            one = measure_changes(cluster, "bench", ["solo"], args.changes)
            rows.append(
                (
                    "spec change -> children applied, 1 resource",
                    f"p50 {pct(one, 0.5):.3f} s",
                    f"p95 {pct(one, 0.95):.3f} s",
                )
            )

            names = [f"m{i:03d}" for i in range(args.resources)]
            t0 = time.perf_counter()
            for name in names:
                cluster.create("bench", immediate(name, f"file:///models/{name}-1.onnx"))
            wait_until(
                lambda: all(
                    (o.get("status") or {}).get("phase") == "Healthy"
                    for o in cluster.objects("/apis/mlrollouts.io/v1alpha1/namespaces/bench/modeldeployments")
                ),
                timeout=900,
                interval=1.0,
            )
            rows.append(
                (
                    f"{args.resources} resources created -> all Healthy",
                    f"{time.perf_counter() - t0:.1f} s",
                    "",
                )
            )
            many = measure_changes(cluster, "bench", names, args.changes)
            rows.append(
                (
                    f"spec change -> children applied, {args.resources} resources",
                    f"p50 {pct(many, 0.5):.3f} s",
                    f"p95 {pct(many, 0.95):.3f} s",
                )
            )
            time.sleep(6)  # let the changed resources finish their scale-down delay before sampling
            rss0, cpu0 = proc_stats(proc.pid)
            w0 = time.perf_counter()
            peak = rss0
            while time.perf_counter() - w0 < args.steady:
                time.sleep(1.0)
                peak = max(peak, proc_stats(proc.pid)[0])
            rss1, cpu1 = proc_stats(proc.pid)
            share = (cpu1 - cpu0) / (time.perf_counter() - w0)
            rows.append(
                (
                    f"steady state, {args.resources} resources: operator RSS",
                    f"{rss1:.0f} MB",
                    f"peak {peak:.0f} MB",
                )
            )
            rows.append(
                (
                    f"steady state, {args.resources} resources: operator CPU",
                    f"{100 * share:.1f} % of a core",
                    "",
                )
            )
        finally:
            proc.stop()
            cluster.stop()
        rb = rollback_latency(workdir)
        if rb is None:
            rows.append(("failing check -> weight 0", "skipped: prometheus not installed", ""))
        else:
            latency, interval = rb
            rows.append(
                (
                    "failing check -> candidate weight 0 (failureLimit 1)",
                    f"{latency:.3f} s",
                    f"interval {interval:.0f} s",
                )
            )
    print("\n(shared machine: other jobs run at the same time, numbers are noisy)")
    print(yaml.safe_dump({"load_average": list(os.getloadavg())}).strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
