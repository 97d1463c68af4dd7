"""A signal that arrives while a scenario's models are built waits for the block to end, then
interrupts the demo; nothing is reported for scenarios that never ran."""

from __future__ import annotations

import os
import signal

import pytest

from mlrollouts.local import demo


@pytest.fixture
def terminate_interrupts():
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_a_sigterm_inside_the_block_is_raised_after_it(terminate_interrupts) -> None:
    finished = False
    with pytest.raises(KeyboardInterrupt), demo.interrupts_deferred():
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # bytecode boundaries, where a handler would have raised
            pass
        finished = True
    assert finished
    assert signal.getsignal(signal.SIGTERM) is signal.default_int_handler


def test_a_quiet_block_raises_nothing_and_restores_the_handlers(terminate_interrupts) -> None:
    with demo.interrupts_deferred():
        pass
    assert signal.getsignal(signal.SIGTERM) is signal.default_int_handler
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):
            pass


def test_an_error_in_the_block_propagates_and_restores_the_handlers(terminate_interrupts) -> None:
    with pytest.raises(ValueError), demo.interrupts_deferred():
        raise ValueError("bad model")
    assert signal.getsignal(signal.SIGTERM) is signal.default_int_handler


def test_no_report_when_no_scenario_ran(capsys) -> None:
    assert demo.report([], context=None, files=[], output_dir=None) is False  # type: ignore[arg-type]
    assert capsys.readouterr().out == ""
