"""Entry point of `mlserving`: `serve` (model server), `compile` (fill its compile cache), `route`
(router) and `learn` (online learner).

Each subcommand lives with its package (``mlserving.server.cli``, ``mlserving.router.cli``) and
exposes ``register(subparsers)``; they are imported lazily.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMAND_MODULES: dict[str, str] = {
    "serve": "mlserving.server.cli",
    "compile": "mlserving.server.compiling",
    "route": "mlserving.router.cli",
    "learn": "mlserving.learning.cli",
}


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlserving", description="Model server and router of mlrollouts.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = argv[0] if argv and not argv[0].startswith("-") else None
    modules = [COMMAND_MODULES[wanted]] if wanted in COMMAND_MODULES else list(COMMAND_MODULES.values())
    for module_name in modules:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
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
