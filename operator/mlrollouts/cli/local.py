"""``mlrollouts local ...``: the local playground's commands.

Each subcommand registers itself in ``SUBCOMMANDS``; ``apiserver`` runs the Kubernetes API emulator
in the foreground until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable
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


# subcommand name -> function adding it to the `local` subparsers
SUBCOMMANDS: dict[str, Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = {
    "apiserver": _register_apiserver,
}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("local", help="run the local playground (no cluster needed)")
    local_sub = parser.add_subparsers(dest="local_command", metavar="SUBCOMMAND")
    for add in SUBCOMMANDS.values():
        add(local_sub)

    def usage(args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(handler=usage)
