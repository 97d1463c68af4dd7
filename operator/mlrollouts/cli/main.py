"""Entry point of `mlrollouts` / `kubectl-mlrollouts`.

Each command group lives in its own module under ``mlrollouts.cli`` and exposes
``register(subparsers)``; modules are imported lazily so a command only pays for what it uses.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Sequence

# command name -> module under mlrollouts.cli that registers it
COMMAND_MODULES: dict[str, str] = {
    "crds": "mlrollouts.cli.crds",
    "operator": "mlrollouts.cli.operator",
    "local": "mlrollouts.cli.local",
    "get": "mlrollouts.cli.plugin",
    "status": "mlrollouts.cli.plugin",
    "promote": "mlrollouts.cli.plugin",
    "abort": "mlrollouts.cli.plugin",
    "retry": "mlrollouts.cli.plugin",
    "pause": "mlrollouts.cli.plugin",
    "resume": "mlrollouts.cli.plugin",
    "history": "mlrollouts.cli.plugin",
    "undo": "mlrollouts.cli.undo",
    "learning": "mlrollouts.cli.learning",
}


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlrollouts",
        description="Safe rollouts of machine-learning models on Kubernetes.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = argv[0] if argv and not argv[0].startswith("-") else None
    modules = (
        [COMMAND_MODULES[wanted]] if wanted in COMMAND_MODULES else sorted(set(COMMAND_MODULES.values()))
    )
    for module_name in modules:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue  # command group not built yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        try:
            return _run(argv)
        finally:
            sys.stdout.flush()  # here, not at exit, where a closed pipe could no longer be caught
    except BrokenPipeError:
        # the reader (`| head`) has had enough: stop quietly, as a process ended by SIGPIPE would
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def _run(argv: Sequence[str] | None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(args_list)
    args = parser.parse_args(args_list)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    return int(handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
