"""Command-line flags over a settings class, for the commands configured by the environment too.

``mlserving serve`` and ``mlserving learn`` declare their flags as a table of ``Flag``; a flag given
wins over the ``<PREFIX>_<FIELD>`` environment variable, and a flag not given leaves it alone (the
parsers use ``argument_default=argparse.SUPPRESS``). A bad value is reported naming both the flag and
the variable, so the operator of a pod knows which one to fix.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from pydantic import ValidationError
    from pydantic_settings import BaseSettings

S = TypeVar("S", bound="BaseSettings")

Flag = tuple[str, str, dict[str, Any]]
"""``(flag, settings field, options of add_argument)``."""

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Repeatable flags whose values become one settings field.
_JOINED = {"trust_type": "trusted_types"}
_STORAGE_OPTIONS = {
    "storage_option": "storage_options",
    "snapshot_storage_option": "snapshot_storage_options",
}


def switch(flag: str, help: str) -> Flag:
    """An on/off flag (``--allow-nan``): the field is true when it is given."""
    return (flag, _field(flag), {"action": "store_true", "help": help})


def repeatable(flag: str, help: str) -> Flag:
    """A flag given once per value (``--trust-type A --trust-type B``)."""
    return (flag, _field(flag), {"action": "append", "help": help})


def add_flags(parser: argparse.ArgumentParser, flags: Iterable[Flag]) -> None:
    for flag, dest, options in flags:
        parser.add_argument(flag, dest=dest, **options)


def configure_logging(level: str) -> None:
    """Plain text logs on stderr (the model server writes JSON logs instead)."""
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)


def settings_from_flags(command: str, settings_class: type[S], args: argparse.Namespace) -> S | None:
    """The settings of the environment with the flags given; None once every refusal is on stderr."""
    from pydantic import ValidationError

    from mlserving.learning.location import parse_storage_options

    overrides = {k: v for k, v in vars(args).items() if k not in ("handler", "command")}
    for listed, field in _JOINED.items():
        values = overrides.pop(listed, None)
        if values:
            overrides[field] = ",".join(values)
    for listed, field in _STORAGE_OPTIONS.items():
        pairs = overrides.pop(listed, None)
        if not pairs:
            continue
        try:
            overrides[field] = parse_storage_options(pairs)
        except ValueError as exc:
            print(f"mlserving {command}: {_flag(listed)}: {exc}", file=sys.stderr)
            return None
    try:
        return settings_class(**overrides)
    except ValidationError as exc:
        _report(command, settings_class.model_config.get("env_prefix", ""), exc)
        return None


def _report(command: str, env_prefix: str, error: ValidationError) -> None:
    for problem in error.errors():
        field = ".".join(str(p) for p in problem["loc"])
        if not field:  # a rule between fields: the message names them
            print(f"mlserving {command}: {problem['msg']}", file=sys.stderr)
            continue
        print(
            f"mlserving {command}: {_flag(field)} ({env_prefix}{field.upper()}): {problem['msg']}",
            file=sys.stderr,
        )


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def _field(flag: str) -> str:
    return flag.removeprefix("--").replace("-", "_")
