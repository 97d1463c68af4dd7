"""The online-learning scenario of `make demo`: a model that learns from feedback follows a drift that
a static copy of it does not, and a burst of poisoned labels is caught by the guard and rolled back.

1. Train an SGDClassifier on the drifting task before its drift (:mod:`mlrollouts.local.drift`).
2. Apply ``examples/online-learning/modeldeployment.yaml`` (``drift-online``: learning on, a guard on
   the prequential accuracy) and ``static.yaml`` (``drift-static``: the same model, no learning),
   with the trained model and a fresh storage directory; wait until both serve and the learner
   published its first snapshot.
3. Stream the task through both entry points (the routers), the labels fed back to the online model:
   the boundary turns at a known sample; the online model's snapshots follow it, the static copy
   degrades. Then a burst of flipped labels: the guard pins serving to the last good snapshot
   (status, event, ``mlrollouts learning history``), and lets go once the learner has recovered.
4. Plot accuracy as the client saw it (online vs static, over time), the learner's own prequential
   accuracy, the snapshots published and served, and the rollback (``learning.png``).
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import httpx
import yaml

from mlrollouts.controller.kube import KubeError
from mlrollouts.core.names import API_VERSION
from mlrollouts.local.demo_scenario import DemoContext, DemoError, Scenario, Status, entry_point
from mlrollouts.local.drift import (
    ClientSample,
    DriftingTask,
    DriftStream,
    Schedule,
    accuracy,
    rolling_accuracy,
    train_initial_model,
)

EXAMPLE_DIR = Path(__file__).resolve().parents[3] / "examples" / "online-learning"
GUARD_EVENTS = ("GuardBreached", "SnapshotPinned", "SnapshotUnpinned")
MEASURED_TAIL = 600
"""Accuracy after the drift is measured over the last this many samples before the poisoned burst."""


def load_manifest(name: str, model: Path, storage: Path) -> dict[str, Any]:
    """An example manifest with the model (and, when it learns, the storage) of this run."""
    manifest: dict[str, Any] = yaml.safe_load((EXAMPLE_DIR / name).read_text())
    manifest["spec"]["model"]["uri"] = model.resolve().as_uri()
    learning = manifest["spec"].get("learning")
    if learning:
        learning["storage"]["uri"] = storage.resolve().as_uri()
    return manifest


@dataclass
class LearningSample:
    t: float
    phase: str
    sent: int
    stream_phase: str
    samples: int | None
    prequential: float | None
    latest: int | None
    serving: int | None
    last_good: int | None
    pinned: int | None
    pinned_by: str | None
    condition: str


def take_sample(status: Status, t: float, stream: DriftStream) -> LearningSample:
    learning = status.get("learning") or {}
    condition = next((c for c in status.get("conditions") or [] if c.get("type") == "LearningHealthy"), {})
    sent = stream.sent
    return LearningSample(
        t=t,
        phase=status.get("phase", "Pending"),
        sent=sent,
        stream_phase=stream.schedule.phase(sent) if sent < stream.schedule.total else "done",
        samples=learning.get("samples"),
        prequential=(learning.get("metrics") or {}).get("accuracy"),
        latest=learning.get("latestSnapshot"),
        serving=learning.get("servingSnapshot"),
        last_good=learning.get("lastGoodSnapshot"),
        pinned=learning.get("pinned"),
        pinned_by=learning.get("pinnedBy"),
        condition=f"{condition.get('status', '?')}/{condition.get('reason', '-')}",
    )


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


class LearningScenario(Scenario):
    """The steps of the online-learning scenario, usable one by one (the end-to-end tests drive them)."""

    key: ClassVar[str] = "learning"

    def __init__(
        self,
        context: DemoContext,
        model: Path,
        storage: Path,
        *,
        task: DriftingTask | None = None,
        schedule: Schedule | None = None,
        rate: float = 30.0,
    ) -> None:
        super().__init__(context)
        self.online = load_manifest("modeldeployment.yaml", model, storage)
        self.static = load_manifest("static.yaml", model, storage)
        self.namespace = self.online["metadata"]["namespace"]
        self.name = self.online["metadata"]["name"]
        self.static_name = self.static["metadata"]["name"]
        self.guard = self.online["spec"]["learning"]["guard"]
        self.samples: list[LearningSample] = []
        self.rollback: dict[str, Any] = {}
        self.learning_events: list[str] = []
        self.stream = DriftStream(
            task=task or DriftingTask(),
            schedule=schedule or Schedule(),
            online=lambda: entry_point(self.kube, self.namespace, self.name),
            static=lambda: entry_point(self.kube, self.namespace, self.static_name),
            online_model=self.online["spec"]["model"]["name"],
            static_model=self.static["spec"]["model"]["name"],
            rate=rate,
            clock=context.elapsed,
        )

    # -- reading ---------------------------------------------------------------------------------------
    def status(self) -> Status:
        return self.status_of(self.name)

    def status_of(self, name: str) -> Status:
        obj = self.kube.get(API_VERSION, "ModelDeployment", self.namespace, name) or {}
        return obj.get("status") or {}

    def sample(self) -> str:
        s = take_sample(self.status(), self.context.elapsed(), self.stream)
        self.samples.append(s)
        window = self.recent_accuracy()
        pin = f", pinned to {s.pinned} by {s.pinned_by}" if s.pinned is not None else ""
        return (
            f"{s.stream_phase:<9} sent {s.sent}; online {_number(window[0])} static {_number(window[1])}; "
            f"learner {_number(s.prequential)} at {s.samples} samples; snapshot {s.serving}/{s.latest}{pin}"
        )

    def recent_accuracy(self, samples: int = 200) -> tuple[float | None, float | None]:
        """Accuracy of the online and the static model over the last ``samples`` answered samples."""
        first = max(0, self.stream.sent - samples)
        outcomes = self.stream.outcomes
        return accuracy(outcomes, "online", first), accuracy(outcomes, "static", first)

    def render(self) -> list[str]:
        header = f"learning — ModelDeployments {self.name} (learns) and {self.static_name}: {self.stage}"
        if not self.samples:
            return [header]
        s = self.samples[-1]
        online, static = self.recent_accuracy()
        pin = f"pinned to {s.pinned} by {s.pinned_by}" if s.pinned is not None else "follows the newest"
        return [
            header,
            f"  stream: {s.stream_phase} ({s.sent}/{self.stream.schedule.total} samples sent)",
            f"  accuracy over the last 200: online {_number(online)}  static {_number(static)}  "
            f"learner (prequential) {_number(s.prequential)}",
            f"  snapshots: serving {s.serving}, latest {s.latest}, last good {s.last_good}; {pin}; "
            f"LearningHealthy {s.condition}",
        ]

    # -- steps -----------------------------------------------------------------------------------------
    def run(self) -> None:
        self.bring_up()
        self.stream.start()
        self.say(
            f"streaming {self.stream.schedule.total} samples at {self.stream.rate:g}/s; the boundary turns by "
            f"{self.stream.task.angle_degrees:g}° at sample {self.stream.schedule.drift_at}"
        )
        online, static = self.follow_drift()
        self.catch_poisoned_burst()
        self.recover()
        self.result = (
            f"after the drift online {online:.2f} vs static {static:.2f}; a poisoned burst rolled back to "
            f"snapshot {self.rollback['pinned']} after {self.rollback['poisoned_sent']} flipped labels"
        )

    def bring_up(self) -> None:
        self.say(
            f"applying ModelDeployments {self.name} (learns online, guard on accuracy) and {self.static_name}"
        )
        for manifest in (self.online, self.static):
            self.kube.create(manifest)
        self.watch(
            lambda s: (
                s.get("phase") == "Healthy"
                and (s.get("learning") or {}).get("servingSnapshot") is not None
                and self.status_of(self.static_name).get("phase") == "Healthy"
                and entry_point(self.kube, self.namespace, self.name) is not None
                and entry_point(self.kube, self.namespace, self.static_name) is not None
            ),
            180,
            "both models come up, the learner publishes snapshot 0",
        )
        self.say("both Healthy; the learner serves snapshot 0 (the initial model)")

    def follow_drift(self) -> tuple[float, float]:
        schedule = self.stream.schedule
        self.watch(lambda _: self.stream.sent >= schedule.drift_at, 120, "before the drift")
        self.say("the boundary turned: the online model learns it from feedback, the static copy cannot")
        self.watch(lambda _: self.stream.sent >= schedule.poison_at, 240, "after the drift")
        online, static = self.accuracy_after_drift()
        if online is None or static is None:
            raise DemoError("no answers were recorded after the drift")
        latest = (self.status().get("learning") or {}).get("latestSnapshot")
        self.say(f"after the drift: online {online:.3f}, static {static:.3f} (snapshot {latest} published)")
        return online, static

    def accuracy_after_drift(self) -> tuple[float | None, float | None]:
        last = self.stream.schedule.poison_at
        first = max(self.stream.schedule.drift_at, last - MEASURED_TAIL)
        outcomes = self.stream.outcomes
        return accuracy(outcomes, "online", first, last), accuracy(outcomes, "static", first, last)

    def catch_poisoned_burst(self) -> None:
        schedule = self.stream.schedule
        self.say(f"sending {schedule.poisoned} flipped labels: the guard should roll serving back")
        # the operator posts a pass's events after its status: wait for both
        status = self.watch(
            lambda s: (
                (s.get("learning") or {}).get("pinnedBy") == "Guard"
                and "SnapshotPinned" in self.event_reasons()
            ),
            120,
            "poisoned burst",
        )
        learning = status["learning"]
        self.rollback = {
            "t": self.context.elapsed(),
            "pinned": learning.get("pinned"),
            "poisoned_sent": max(0, self.stream.sent - schedule.poison_at),
            "latest": learning.get("latestSnapshot"),
        }
        self.say(
            f"guard breached: serving pinned to snapshot {learning.get('pinned')} (latest "
            f"{learning.get('latestSnapshot')}) after {self.rollback['poisoned_sent']} poisoned labels"
        )

    def recover(self) -> None:
        status = self.watch(
            lambda s: (
                (s.get("learning") or {}).get("pinned") is None and "SnapshotUnpinned" in self.event_reasons()
            ),
            240,
            "guard lets go",
        )
        self.rollback["released_t"] = self.context.elapsed()
        learning = status.get("learning") or {}
        self.say(f"recovered: serving follows the newest snapshot again ({learning.get('servingSnapshot')})")
        self.watch(lambda _: self.stream.join(timeout=0), 240, "the rest of the stream")

    # -- results ---------------------------------------------------------------------------------------
    def events(self) -> list[str]:
        """The online model's learning events, oldest first (reason: message)."""
        items = [
            e
            for e in self.kube.list("v1", "Event", self.namespace)
            if (e.get("involvedObject") or {}).get("name") == self.name
        ]
        items.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
        return [f"{e.get('reason')}: {e.get('message')}" for e in items]

    def event_reasons(self) -> set[str]:
        return {line.split(":", 1)[0] for line in self.events()}

    def outcome(self) -> list[str]:
        schedule = self.stream.schedule
        outcomes = self.stream.outcomes
        online, static = self.accuracy_after_drift()
        lines = [
            f"{len(outcomes)} samples answered ({self.stream.transport_errors} requests without an answer)",
            "accuracy before the drift: online "
            f"{_number(accuracy(outcomes, 'online', 0, schedule.drift_at))}, static "
            f"{_number(accuracy(outcomes, 'static', 0, schedule.drift_at))}",
            f"accuracy after the drift (last {MEASURED_TAIL} samples before the burst): online "
            f"{_number(online)}, static {_number(static)}",
        ]
        if self.rollback:
            lines.append(
                f"poisoned burst: serving pinned to snapshot {self.rollback['pinned']} by the guard after "
                f"{self.rollback['poisoned_sent']} of {schedule.poisoned} flipped labels; online accuracy "
                f"during the burst and recovery {_number(accuracy(outcomes, 'online', schedule.poison_at))}"
            )
        lines += [f"event {line}" for line in self.learning_events if line.startswith(GUARD_EVENTS)]
        return lines

    def timeline(self) -> dict[str, Any]:
        schedule = self.stream.schedule
        return {
            "schedule": asdict(schedule),
            "marks": self.stream.marks,
            "rollback": self.rollback,
            "samples": [asdict(s) for s in self.samples],
            "outcomes": [asdict(o) for o in self.stream.outcomes],
        }

    def plot(self, output_dir: Path) -> Path:
        png = output_dir / "learning.png"
        plot(self.samples, self.stream.outcomes, self.stream.marks, self.rollback, self.guard, png)
        return png

    def stop(self) -> None:
        self.stream.stop()
        with contextlib.suppress(KubeError, httpx.HTTPError):
            self.learning_events = self.events()  # read now: the API client closes below
        super().stop()


def plot(
    samples: list[LearningSample],
    outcomes: list[ClientSample],
    marks: dict[str, float],
    rollback: dict[str, Any],
    guard: dict[str, Any],
    path: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    window = int(guard.get("window", 200))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for which, color in (("online", "tab:blue"), ("static", "tab:gray")):
        points = rolling_accuracy(outcomes, which, window)
        top.plot([t for t, _ in points], [a for _, a in points], color=color, label=f"{which} (as served)")
    learner = [(s.t, s.prequential) for s in samples if s.prequential is not None]
    top.plot(
        [t for t, _ in learner],
        [a for _, a in learner],
        color="tab:orange",
        linestyle="--",
        label="learner, prequential (labels as sent)",
    )
    top.axhline(float(guard.get("min", 0.5)), color="tab:red", linestyle=":", label="guard min")
    top.set_ylabel(f"accuracy (last {window} samples)")
    top.set_ylim(-0.02, 1.02)
    _plot_snapshots(bottom, samples, outcomes)
    for axis in (top, bottom):
        _mark_phases(axis, marks, rollback)
    top.legend(loc="lower left", bbox_to_anchor=(0.25, 0.0), fontsize=8)  # clear of the marks
    top.set_title("online learning on the local playground: drift, then a poisoned burst")
    bottom.set_xlabel("seconds since start")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_snapshots(axis: Any, samples: list[LearningSample], outcomes: list[ClientSample]) -> None:
    times = [s.t for s in samples]
    axis.step(
        times, [_nan(s.latest) for s in samples], where="post", color="tab:green", label="latest published"
    )
    axis.step(times, [_nan(s.serving) for s in samples], where="post", color="tab:blue", label="serving")
    served = [(o.t, o.snapshot) for o in outcomes if o.snapshot is not None]
    axis.scatter(
        [t for t, _ in served], [v for _, v in served], s=2, color="tab:purple", label="in responses"
    )
    axis.set_ylabel("snapshot version")
    axis.legend(loc="upper left", fontsize=8)


def _mark_phases(axis: Any, marks: dict[str, float], rollback: dict[str, Any]) -> None:
    if "drifted" in marks:
        axis.axvline(marks["drifted"], color="black", linestyle="--", linewidth=1)
        axis.annotate(" drift", (marks["drifted"], 0.02), xycoords=("data", "axes fraction"), fontsize=8)
    if "poisoned" in marks:
        axis.axvspan(marks["poisoned"], marks.get("recovery", marks["poisoned"]), color="tab:red", alpha=0.12)
        axis.annotate(
            " flipped labels", (marks["poisoned"], 0.94), xycoords=("data", "axes fraction"), fontsize=8
        )
    if "t" in rollback:
        axis.axvline(rollback["t"], color="tab:red", linewidth=1)
        axis.annotate(
            f" rolled back to {rollback.get('pinned')}",
            (rollback["t"], 0.02),
            xycoords=("data", "axes fraction"),
            fontsize=8,
            color="tab:red",
        )
    if "released_t" in rollback:
        axis.axvline(rollback["released_t"], color="tab:green", linewidth=1, linestyle=":")


def _nan(value: int | None) -> float:
    return float("nan") if value is None else float(value)


def build(context: DemoContext, models_dir: Path, **options: Any) -> LearningScenario:
    """Train the initial model and prepare a fresh store under the playground's state directory."""
    task = options.pop("task", None) or DriftingTask()
    model = train_initial_model(models_dir / "drift.skops", task)
    storage = context.playground.state_dir / "learning-store"
    shutil.rmtree(storage, ignore_errors=True)  # a learner resumes from what it finds: start clean
    storage.mkdir(parents=True)
    return LearningScenario(context, model, storage, task=task, **options)
