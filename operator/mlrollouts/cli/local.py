"""``mlrollouts local ...``: the local playground's commands.

``apiserver`` runs the Kubernetes API emulator in the foreground until SIGTERM/SIGINT; the others,
listed in ``PLAYGROUND_COMMANDS``, work on the playground whose files live in ``--state-dir``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


def _register_apiserver(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "apiserver",
        help="run the Kubernetes API emulator on a loopback port",
        description="Serve an in-memory Kubernetes API (kubectl, kopf and the kubernetes client work "
        "against it) until SIGTERM or Ctrl-C.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=0, help="TCP port; 0 picks a free one (default: %(default)s)"
    )
    parser.add_argument("--kubeconfig", type=Path, help="write a kubeconfig pointing at the emulator here")
    parser.add_argument("--namespace", default="default", help="namespace of the kubeconfig's context")
    parser.add_argument("--audit-log", type=Path, help="append every request as a JSON line to this file")
    parser.set_defaults(handler=_run_apiserver)


def _run_apiserver(args: argparse.Namespace) -> int:
    from mlrollouts.local.apiserver import ApiEmulator, serve, write_kubeconfig

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(signum, stop.set)
        emulator = ApiEmulator(audit_path=args.audit_log)
        async with serve(emulator, args.host, args.port) as url:
            if args.kubeconfig:
                write_kubeconfig(args.kubeconfig, url, args.namespace)
                print(f"kubeconfig: {args.kubeconfig}", flush=True)
            print(f"Kubernetes API emulator serving on {url}", flush=True)
            await stop.wait()
        print("Kubernetes API emulator stopped", flush=True)

    try:
        asyncio.run(main())
    except OSError as exc:
        print(f"mlrollouts local apiserver: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


@dataclass(frozen=True)
class PlaygroundCommand:
    """A subcommand on the playground whose files live in ``--state-dir``."""

    handler: Callable[[argparse.Namespace], int]
    help: str
    description: str | None = None
    flags: Callable[[argparse.ArgumentParser], None] | None = None
    """Adds the command's own flags after ``--state-dir``."""

    def add_to(self, sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str) -> None:
        parser = sub.add_parser(name, help=self.help, description=self.description)
        parser.add_argument(
            "--state-dir",
            type=Path,
            default=Path(".mlrollouts"),
            help="where the kubeconfig, logs and state live (default: %(default)s)",
        )
        if self.flags is not None:
            self.flags(parser)
        parser.set_defaults(handler=self.handler)


def _running(state_dir: Path, otherwise: str) -> dict[str, object] | None:
    """The state of the playground running from ``state_dir``; says ``otherwise`` when none is."""
    from mlrollouts.local.playground import running_state

    state = running_state(state_dir)
    if not state:
        print(otherwise)
    return state


def _up_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--detach", action="store_true", help="run in the background and return once ready")


def _print_summary(state: dict[str, object]) -> None:
    print(f"API server:   {state['apiServer']}")
    print(
        f"kubeconfig:   {state['kubeconfig']}   (kubectl --kubeconfig {state['kubeconfig']} get mlrollouts)"
    )
    print(f"Prometheus:   {state['prometheus']}")
    print(f"operator:     {state['operatorMetrics']}")
    print(f"logs:         {state['logs']}")


def _run_up(args: argparse.Namespace) -> int:
    import subprocess
    import time

    from mlrollouts.local.playground import Playground, PlaygroundError, read_state, running_state

    existing = running_state(args.state_dir)
    if existing:
        print(f"the playground is already running (pid {existing['pid']}):")
        _print_summary(existing)
        return 0
    if args.detach:
        args.state_dir.mkdir(parents=True, exist_ok=True)
        log_path = args.state_dir / "up.log"
        with open(log_path, "ab") as log:
            child = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "mlrollouts.cli.main",
                    "local",
                    "up",
                    "--state-dir",
                    str(args.state_dir),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            state = read_state(args.state_dir)
            if state and int(state["pid"]) == child.pid:
                _print_summary(state)
                return 0
            if child.poll() is not None:
                print(f"mlrollouts local up failed; see {log_path}:", file=sys.stderr)
                print(log_path.read_text()[-2000:], file=sys.stderr)
                return 1
            time.sleep(0.2)
        print(f"the playground did not become ready in 120 s; see {log_path}", file=sys.stderr)
        return 1
    try:
        playground = Playground(args.state_dir).start()
    except PlaygroundError as exc:
        print(f"mlrollouts local up: {exc}", file=sys.stderr)
        return 1
    state = read_state(args.state_dir) or {}
    _print_summary(state)
    print("playground running; Ctrl-C or `mlrollouts local down` stops it", flush=True)
    try:
        playground.run_forever()
    except PlaygroundError as exc:
        print(f"mlrollouts local up: {exc}", file=sys.stderr)
        return 1
    return 0


def _run_down(args: argparse.Namespace) -> int:
    import os
    import time

    from mlrollouts.local.playground import pid_alive

    state = _running(args.state_dir, "no playground is running")
    if not state:
        return 0
    pid = int(state["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.2)
    if pid_alive(pid):
        print(f"the playground (pid {pid}) did not stop within 60 s", file=sys.stderr)
        return 1
    print("playground stopped")
    return 0


def _run_status(args: argparse.Namespace) -> int:
    from mlrollouts.controller.kube import KubeError, SyncKube
    from mlrollouts.core.names import API_VERSION

    state = _running(args.state_dir, "no playground is running (start one with `mlrollouts local up`)")
    if not state:
        return 1
    _print_summary(state)
    kube = SyncKube.from_environment(str(state["kubeconfig"]))
    try:
        print()
        for kind in ("ModelDeployment", "Experiment", "CompositeModel"):
            for item in kube.list(API_VERSION, kind):
                meta, status = item["metadata"], item.get("status") or {}
                print(
                    f"{kind.lower():16} {meta.get('namespace')}/{meta['name']:24} phase={status.get('phase', '-')}"
                    f" {status.get('weightsSummary', '')}"
                )
        for deployment in kube.list("apps/v1", "Deployment"):
            meta, status = deployment["metadata"], deployment.get("status") or {}
            print(
                f"{'deployment':16} {meta.get('namespace')}/{meta['name']:24} "
                f"ready={status.get('readyReplicas', 0)}/{deployment.get('spec', {}).get('replicas', 1)}"
            )
    except KubeError as exc:
        print(f"cannot read the playground's API: {exc}", file=sys.stderr)
        return 1
    finally:
        kube.close()
    return 0


def _demo_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=Path("out/demo"),
        help="models, the timeline and the plot go here (default: %(default)s)",
    )
    parser.add_argument("--no-live", action="store_true", help="print events only, no live view")


def _run_demo(args: argparse.Namespace) -> int:
    from mlrollouts.local.demo import run_demo

    return run_demo(args.state_dir, args.output_dir, live=not args.no_live)


PLAYGROUND_COMMANDS: dict[str, PlaygroundCommand] = {
    "up": PlaygroundCommand(
        _run_up,
        help="start the playground: API emulator, CRDs, Prometheus, process kubelet, operator",
        description="Start the local playground and supervise it until SIGTERM or Ctrl-C "
        "(or, with --detach, in the background until `mlrollouts local down`).",
        flags=_up_flags,
    ),
    "down": PlaygroundCommand(_run_down, help="stop a playground started with `local up`"),
    "status": PlaygroundCommand(_run_status, help="show the playground's endpoints and resources"),
    "demo": PlaygroundCommand(
        _run_demo,
        help="run every scenario on the playground at once: a canary, a composite model, online learning",
        flags=_demo_flags,
    ),
}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("local", help="run the local playground (no cluster needed)")
    local_sub = parser.add_subparsers(dest="local_command", metavar="SUBCOMMAND")
    _register_apiserver(local_sub)
    for name, command in PLAYGROUND_COMMANDS.items():
        command.add_to(local_sub, name)

    def usage(args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(handler=usage)
