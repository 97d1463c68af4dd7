"""`make demo`: every scenario live on one local playground, at the same time.

1. Train each scenario's models and start the playground (API emulator, Prometheus, process
   kubelet, operator).
2. Run the scenarios concurrently, each in its own thread with its own resources
   (:mod:`mlrollouts.local.demo_canary`: a model canaried, promoted, a broken one rolled back;
   :mod:`mlrollouts.local.demo_composite`: a graph of models with a component canaried inside it and
   its results delivered as events; :mod:`mlrollouts.local.demo_learning`: an online model adapting
   to drift). A live view shows a section per scenario.
3. Write ``timeline.json`` (every scenario's samples) and one plot per scenario, stop everything,
   and print what each scenario did.

A scenario is a :class:`mlrollouts.local.demo_scenario.Scenario` built by a function
``build(context, models_dir)``; adding one to ``SCENARIOS`` adds it to the demo.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from mlrollouts.controller.kube import KubeError
from mlrollouts.local import demo_canary, demo_composite, demo_learning
from mlrollouts.local.demo_scenario import DemoContext, DemoError, Scenario
from mlrollouts.local.playground import Playground, PlaygroundError

SCENARIOS: dict[str, Callable[[DemoContext, Path], Scenario]] = {
    demo_canary.CanaryScenario.key: demo_canary.build,
    demo_composite.CompositeScenario.key: demo_composite.build,
    demo_learning.LearningScenario.key: demo_learning.build,
}
FAILURES = (DemoError, KubeError, PlaygroundError, OSError)


@dataclass
class ScenarioRun:
    """A scenario in its thread, and how it ended (``error`` None: it did all its steps)."""

    scenario: Scenario
    thread: threading.Thread | None = None
    error: str | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name=f"demo-{self.scenario.key}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.scenario.run()
        except FAILURES as exc:
            self.error = str(exc)
        except Exception as exc:  # shown with the others; the demo still cleans up
            self.error = f"{type(exc).__name__}: {exc}"
        self.scenario.stage = "failed" if self.error is not None else f"done: {self.scenario.result}"

    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()


def frame(context: DemoContext, runs: list[ScenarioRun]) -> str:
    lines = [f"mlrollouts demo — t={context.elapsed():6.1f}s", ""]
    for run in runs:
        lines += run.scenario.render()
        lines += [f"  {line}" for line in run.scenario.log[-3:]]
        lines.append("")
    return "\n".join(lines)


def follow(context: DemoContext, runs: list[ScenarioRun]) -> None:
    """Keep the playground supervised and the live view drawn until every scenario is done."""
    try:
        while any(run.running() for run in runs):
            context.supervise()
            if context.live:
                print("\x1b[H\x1b[J" + frame(context, runs), flush=True)
            time.sleep(1.0)
    except (PlaygroundError, KeyboardInterrupt):
        context.cancelled.set()
        for run in runs:
            if run.thread is not None:
                run.thread.join(timeout=30)
        raise


def write_results(runs: list[ScenarioRun], output_dir: Path) -> list[Path]:
    output_dir.mkdir(parents=True, exist_ok=True)
    timeline = output_dir / "timeline.json"
    timeline.write_text(json.dumps({r.scenario.key: r.scenario.timeline() for r in runs}, indent=1))
    return [r.scenario.plot(output_dir) for r in runs if r.thread is not None]


def report(runs: list[ScenarioRun], context: DemoContext, files: list[Path], output_dir: Path) -> bool:
    """Print what each scenario did (and its steps, after a live view); True when all succeeded."""
    started = [run for run in runs if run.thread is not None]
    if not started:  # interrupted while the models were trained: nothing ran, nothing to report
        return False
    if context.live:
        for line in sorted((line for r in started for line in r.scenario.log), key=_said_at):
            print(line)
    print()
    for run in started:
        for line in run.scenario.outcome():
            print(f"{run.scenario.key}: {line}")
        if run.error is not None:
            print(f"{run.scenario.key} failed: {run.error}", file=sys.stderr)
    print(f"plots: {', '.join(str(f) for f in files)}\ntimeline: {output_dir / 'timeline.json'}")
    ok = len(started) == len(runs) and all(run.error is None for run in runs)
    if ok:
        done = "; ".join(f"{r.scenario.key}: {r.scenario.result}" for r in runs)
        print(f"demo finished in {context.elapsed():.0f}s — {done}")
    return ok


def _said_at(line: str) -> float:
    return float(line[1 : line.index("s]")])


def stop_on_termination() -> None:
    """SIGTERM (a cancelled CI job, ``timeout``) and SIGHUP (a closed terminal) end the demo as Ctrl-C
    does: the scenarios are cancelled and the playground stopped before the process exits."""
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.default_int_handler)


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Let the block finish before Ctrl-C, SIGTERM or SIGHUP interrupts the demo, then raise
    KeyboardInterrupt. Building a scenario imports numpy, scipy and scikit-learn; an exception
    raised in the middle of a C extension's import leaves a half-made module behind, and the
    interpreter can then crash (SIGSEGV) or die by SIGINT at exit instead of stopping cleanly."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    signums = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {signum: signal.getsignal(signum) for signum in signums}
    for signum in signums:
        signal.signal(signum, lambda got, _frame: received.append(got))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if received:
        raise KeyboardInterrupt


def run_demo(
    state_dir: Path | None, output_dir: Path, live: bool = True, scenarios: list[str] | None = None
) -> int:
    output_dir = output_dir.resolve()
    names = scenarios or list(SCENARIOS)
    stop_on_termination()
    print("starting the playground (API emulator, Prometheus, process kubelet, operator) ...", flush=True)
    try:
        playground = Playground(state_dir).start()
    except PlaygroundError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("demo: interrupted while the playground started; it was stopped", file=sys.stderr)
        return 1
    context = DemoContext(playground, live=live and sys.stdout.isatty())
    runs: list[ScenarioRun] = []
    failure = None
    try:
        for name in names:
            print(f"training the models of the {name} scenario ...", flush=True)
            with interrupts_deferred():
                runs.append(ScenarioRun(SCENARIOS[name](context, output_dir / "models" / name)))
        for run in runs:
            run.start()
        follow(context, runs)
    except FAILURES as exc:
        failure = str(exc)
    except KeyboardInterrupt:
        failure = "interrupted; the playground was stopped"
    finally:
        for run in runs:
            run.scenario.stop()
        files = write_results(runs, output_dir)
        playground.stop()
    ok = report(runs, context, files, output_dir) and failure is None and len(runs) == len(names)
    if failure is not None:
        print(f"demo failed: {failure}", file=sys.stderr)
    if not ok:
        print(f"logs: {playground.logs}", file=sys.stderr)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="mlrollouts-demo")
    parser.add_argument("--state-dir", type=Path, help="default: per user (see `mlrollouts local up -h`)")
    parser.add_argument("--output-dir", type=Path, default=Path("out/demo"))
    parser.add_argument("--no-live", action="store_true")
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS), help="default: all")
    args = parser.parse_args(argv)
    return run_demo(args.state_dir, args.output_dir, live=not args.no_live, scenarios=args.scenario)


if __name__ == "__main__":
    sys.exit(main())
