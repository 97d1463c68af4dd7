"""``mlrollouts local ...``: the local playground's commands.

``apiserver`` runs the Kubernetes API emulator in the foreground until SIGTERM/SIGINT; the others,
listed in ``PLAYGROUND_COMMANDS``, work on the playground whose files live in ``--state-dir`` (by
default the one of ``$KUBECONFIG`` when that is a playground's kubeconfig, else the per-user
``$XDG_STATE_HOME/mlrollouts``, ``~/.local/state/mlrollouts``).
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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlrollouts.controller.kube import SyncKube


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
    parser.add_argument(
        "--pod-logs-dir",
        type=Path,
        help="serve pods/log (kubectl logs) from the process kubelet's pod directories under here",
    )
    parser.add_argument(
        "--faults",
        help="inject API failures, e.g. 'conflict=0.1,throttle=0.05,error=0.05,drop-watch=30s,slow=0.1:0.5s' "
        "(see mlrollouts.local.apiserver.faults; default: $MLROLLOUTS_APISERVER_FAULTS)",
    )
    parser.set_defaults(handler=_run_apiserver)


def _run_apiserver(args: argparse.Namespace) -> int:
    from mlrollouts.local.apiserver import ApiEmulator, serve, write_kubeconfig
    from mlrollouts.local.apiserver.faults import FaultInjector, FaultSpecError, parse_faults

    try:
        faults = FaultInjector(parse_faults(args.faults)) if args.faults else FaultInjector.from_environment()
    except FaultSpecError as exc:
        print(f"mlrollouts local apiserver: --faults: {exc}", file=sys.stderr)
        return 2

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(signum, stop.set)
        emulator = ApiEmulator(audit_path=args.audit_log, pod_logs_dir=args.pod_logs_dir, faults=faults)
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
            help="where the kubeconfig, logs and state live (default: the directory of $KUBECONFIG "
            "when it is a playground's, else $XDG_STATE_HOME/mlrollouts or ~/.local/state/mlrollouts)",
        )
        if self.flags is not None:
            self.flags(parser)
        parser.set_defaults(handler=self._run)

    def _run(self, args: argparse.Namespace) -> int:
        from mlrollouts.local.playground import locate_state_dir

        args.state_dir = locate_state_dir(args.state_dir)
        return self.handler(args)


def _running(state_dir: Path, otherwise: str) -> dict[str, object] | None:
    """The state of the playground running from ``state_dir``; says ``otherwise`` when none is."""
    from mlrollouts.local.playground import running_state

    state = running_state(state_dir)
    if not state:
        print(otherwise)
    return state


def _up_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--detach", action="store_true", help="run in the background and return once ready")
    parser.add_argument(
        "--runtime",
        choices=("process", "podman"),
        default="process",
        help="how pods run: as processes of this environment, or as containers of their images with "
        "podman (build them with `make images`) (default: %(default)s)",
    )
    parser.add_argument(
        "--no-operator",
        action="store_true",
        help="do not start the operator (install its own Deployment, e.g. from the chart, instead)",
    )


def _print_summary(state: dict[str, object]) -> None:
    print(f"API server:   {state['apiServer']}")
    print(
        f"kubeconfig:   {state['kubeconfig']}   (kubectl --kubeconfig {state['kubeconfig']} get mlrollouts)"
    )
    print(f"Prometheus:   {state['prometheus']}")
    print(f"operator:     {state['operatorMetrics'] or 'not started (--no-operator)'}")
    if state.get("runtime", "process") != "process":
        print(f"pods run as:  {state['runtime']} containers")
    if state.get("serviceProxy"):
        print(f"Service URLs: http://<service>.<namespace>.svc through the proxy {state['serviceProxy']}")
    print(f"logs:         {state['logs']}   (pods: kubectl logs POD)")


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
                    "--runtime",
                    args.runtime,
                    *(["--no-operator"] if args.no_operator else []),
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
    for signum in (signal.SIGTERM, signal.SIGHUP):  # while starting: stop what started, as Ctrl-C does
        signal.signal(signum, signal.default_int_handler)
    try:
        playground = Playground(args.state_dir, runtime=args.runtime, operator=not args.no_operator).start()
    except PlaygroundError as exc:
        print(f"mlrollouts local up: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("mlrollouts local up: interrupted while starting; stopped", file=sys.stderr)
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

    state = _running(
        args.state_dir,
        f"no playground is running from {args.state_dir} (start one with `mlrollouts local up`)",
    )
    if not state:
        return 1
    _print_summary(state)
    kube = SyncKube.from_environment(str(state["kubeconfig"]))
    try:
        print()
        for line in status_lines(kube):
            print(line)
    except KubeError as exc:
        print(f"cannot read the playground's API: {exc}", file=sys.stderr)
        return 1
    finally:
        kube.close()
    return 0


def endpoint_urls(endpoints: dict[str, Any]) -> list[str]:
    """The URLs of an Endpoints object's ready addresses (one per address and port)."""
    urls = []
    for subset in endpoints.get("subsets") or []:
        for address in subset.get("addresses") or []:
            for port in subset.get("ports") or []:
                urls.append(f"http://{address['ip']}:{port['port']}")
    return urls


def status_lines(kube: SyncKube) -> list[str]:
    """The playground's resources, Deployments and every serving endpoint's URL."""
    from mlrollouts.core.names import API_VERSION

    lines = []
    for kind in ("ModelDeployment", "Experiment", "CompositeModel"):
        for item in kube.list(API_VERSION, kind):
            meta, status = item["metadata"], item.get("status") or {}
            lines.append(
                f"{kind.lower():16} {meta.get('namespace')}/{meta['name']:24} phase={status.get('phase', '-')}"
                f" {status.get('weightsSummary', '')}".rstrip()
            )
    for deployment in kube.list("apps/v1", "Deployment"):
        meta, status = deployment["metadata"], deployment.get("status") or {}
        lines.append(
            f"{'deployment':16} {meta.get('namespace')}/{meta['name']:24} "
            f"ready={status.get('readyReplicas', 0)}/{deployment.get('spec', {}).get('replicas', 1)}"
        )
    endpoints = [(e["metadata"], endpoint_urls(e)) for e in kube.list("v1", "Endpoints")]
    serving = [(meta, urls) for meta, urls in endpoints if urls]
    if serving:
        lines += ["", "endpoints (serving now):"]
        for meta, urls in sorted(serving, key=lambda e: (e[0].get("namespace", ""), e[0]["name"])):
            lines.append(f"  {meta.get('namespace')}/{meta['name']:28} {' '.join(urls)}")
    return lines


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
