"""The drifting stream of the online-learning example: train the initial model, then send traffic and
labelled feedback through the two entry points and print what each model got right.

    python examples/online-learning/drift_stream.py train --output /tmp/mlrollouts-online-learning/drift.skops
    python examples/online-learning/drift_stream.py stream --kubeconfig .mlrollouts/kubeconfig

``stream`` finds the entry points (the routers of ``drift-online`` and ``drift-static``) through
their Endpoints, as on the playground; on a cluster, port-forward both Services and pass
``--online-url`` and ``--static-url``. The task, the schedule and the client are
``mlrollouts.local.drift`` (the demo's learning scenario uses the same code).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from pathlib import Path

from mlrollouts.local.drift import DriftingTask, DriftStream, Schedule, accuracy, train_initial_model


def train(args: argparse.Namespace) -> int:
    task = DriftingTask(angle_degrees=args.angle)
    path = train_initial_model(args.output, task)
    print(
        f"initial model (SGDClassifier, {task.features} features, before the drift): {path.resolve().as_uri()}"
    )
    return 0


def resolver(args: argparse.Namespace, url: str | None, service: str):
    if url:
        return lambda: url
    from mlrollouts.controller.kube import SyncKube

    kube = SyncKube.from_environment(args.kubeconfig)

    def entry_point() -> str | None:
        endpoints = kube.get("v1", "Endpoints", args.namespace, service) or {}
        for subset in endpoints.get("subsets") or []:
            for address in subset.get("addresses") or []:
                return f"http://{address['ip']}:{subset['ports'][0]['port']}"
        return None

    return entry_point


def share(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def report(stream: DriftStream) -> None:
    schedule, outcomes = stream.schedule, stream.outcomes
    phases = (
        ("before the drift", 0, schedule.drift_at),
        ("after the drift", schedule.drift_at, schedule.poison_at),
        ("poisoned burst", schedule.poison_at, schedule.poison_end),
        ("recovery", schedule.poison_end, schedule.total),
    )
    print(f"{'phase':<18} {'samples':>8} {'online':>7} {'static':>7}")
    for name, first, last in phases:
        online, static = accuracy(outcomes, "online", first, last), accuracy(outcomes, "static", first, last)
        count = sum(first <= o.index < last for o in outcomes)
        print(f"{name:<18} {count:>8} {share(online):>7} {share(static):>7}")
    if stream.transport_errors:
        print(f"requests without an answer: {stream.transport_errors}")


def stream(args: argparse.Namespace) -> int:
    drift = DriftStream(
        task=DriftingTask(angle_degrees=args.angle),
        schedule=Schedule(args.before, args.drifted, args.poisoned, args.recovery),
        online=resolver(args, args.online_url, args.online),
        static=resolver(args, args.static_url, args.static),
        online_model=args.online,
        static_model=args.static,
        rate=args.rate,
    )
    runner = threading.Thread(target=lambda: asyncio.run(drift.run()), daemon=True)
    runner.start()
    while runner.is_alive():
        runner.join(timeout=5)
        recent = max(0, drift.sent - 200)
        online, static = (
            accuracy(drift.outcomes, "online", recent),
            accuracy(drift.outcomes, "static", recent),
        )
        phase = drift.schedule.phase(min(drift.sent, drift.schedule.total - 1))
        print(
            f"{time.strftime('%H:%M:%S')} {phase:<9} {drift.sent:>5} sent; last 200: online "
            f"{share(online)} static {share(static)}",
            flush=True,
        )
    report(drift)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--angle", type=float, default=75.0, help="degrees the boundary turns at the drift")
    sub = parser.add_subparsers(dest="command", required=True)
    trainer = sub.add_parser("train", help="train the initial model on the boundary before the drift")
    trainer.add_argument("--output", type=Path, required=True, help="where to write the skops file")
    trainer.set_defaults(run=train)
    sender = sub.add_parser("stream", help="send traffic and feedback, print accuracy per phase")
    sender.add_argument("--kubeconfig", help="the playground's kubeconfig (.mlrollouts/kubeconfig)")
    sender.add_argument("-n", "--namespace", default="default")
    sender.add_argument("--online", default="drift-online", help="the ModelDeployment that learns")
    sender.add_argument("--static", default="drift-static", help="the ModelDeployment that does not")
    sender.add_argument("--online-url", help="base URL of the online model's entry point")
    sender.add_argument("--static-url", help="base URL of the static model's entry point")
    sender.add_argument("--rate", type=float, default=30.0, help="samples per second")
    for name, default in (("before", 450), ("drifted", 1200), ("poisoned", 300), ("recovery", 900)):
        sender.add_argument(
            f"--{name}", type=int, default=default, help=f"samples {name} (default {default})"
        )
    sender.set_defaults(run=stream)
    args = parser.parse_args(argv)
    if args.command == "stream" and not (args.kubeconfig or (args.online_url and args.static_url)):
        parser.error("stream: pass --kubeconfig, or both --online-url and --static-url")
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
