"""The console scripts answer --help and reject unknown commands."""

from __future__ import annotations

import pytest

from mlrollouts.cli import main as mlrollouts_cli
from mlserving import cli as mlserving_cli


@pytest.mark.parametrize("entry", [mlrollouts_cli.main, mlserving_cli.main])
def test_help_exits_zero(entry, capsys):
    with pytest.raises(SystemExit) as exc:
        entry(["--help"])
    assert exc.value.code == 0
    assert "usage:" in capsys.readouterr().out


@pytest.mark.parametrize("entry", [mlrollouts_cli.main, mlserving_cli.main])
def test_unknown_command_is_an_error(entry, capsys):
    with pytest.raises(SystemExit) as exc:
        entry(["no-such-command"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
