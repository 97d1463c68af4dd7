"""A model that is fetched but does not load: reported as ``ModelLoadFailed``, read by the operator."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mlrollouts.rollout.pods import pods_trouble
from mlserving.runtimes import ModelLoadError
from mlserving.runtimes.refusals import (
    EXIT_ENV,
    LOAD_FAILED_EXIT_CODE,
    MAX_TERMINATION_MESSAGE,
    MODEL_LOAD_FAILED,
    TERMINATION_PATH_ENV,
    UntrustedTypesError,
    fetch_failure_report,
    load_failure_report,
    refusal_report,
)

URI = "http://models.example/iris/model.onnx"


def test_the_report_names_the_model_and_the_error() -> None:
    corrupt = ModelLoadError("model.onnx: not a valid ONNX model: INVALID_PROTOBUF")
    assert json.loads(load_failure_report(corrupt, URI)) == {
        "reason": "ModelLoadFailed",
        "message": f"load failed: {URI}: model.onnx: not a valid ONNX model: INVALID_PROTOBUF",
    }
    # an error that is not a ModelLoadError says what it is
    timeout = subprocess.TimeoutExpired(["compile"], 300)
    message = json.loads(load_failure_report(timeout, URI))["message"]
    assert message.startswith(f"load failed: {URI}: TimeoutExpired: Command '['compile']' timed out")


@pytest.mark.parametrize(
    "report",
    [
        lambda text: load_failure_report(ModelLoadError(text), URI),
        lambda text: fetch_failure_report(RuntimeError(text)),
        lambda text: refusal_report(UntrustedTypesError(text, ["sklearn.tree._tree.Tree"])),
    ],
    ids=["load", "fetch", "untrusted"],
)
def test_every_report_fits_the_termination_message_whatever_its_characters(report) -> None:
    # quotes, newlines and non-ASCII characters take more than one byte each in the JSON line
    line = report('model.skops: "bad"\n' + "é∂\x00" * 3000)
    assert len(line.encode()) <= MAX_TERMINATION_MESSAGE
    assert "\n" not in line and 'model.skops: "bad"\n' in json.loads(line)["message"]
    assert len(report("short")) < 200 and json.loads(report("short"))["message"].endswith("short")


def test_the_operator_says_why_a_pod_ended_on_a_load_failure() -> None:
    report = load_failure_report(ModelLoadError("model.skops: not a loadable skops file: BadZipFile"), URI)
    # FallbackToLogsOnError: the log tail, whose last line is the report
    ended = {"terminated": {"exitCode": LOAD_FAILED_EXIT_CODE, "message": f"loading model\n{report}\n"}}
    container = {
        "name": "server",
        "ready": False,
        "restartCount": 2,
        "state": {"running": {}},  # restarted, loading again
        "lastState": ended,
    }
    starting = {"name": "server", "ready": False, "restartCount": 0, "state": {"running": {}}}
    pods = [
        {"metadata": {}, "status": {"containerStatuses": [starting]}},
        {"metadata": {}, "status": {"containerStatuses": [container]}},
    ]
    trouble = pods_trouble(pods)
    assert trouble is not None and trouble.reason == MODEL_LOAD_FAILED == "ModelLoadFailed"
    assert trouble.message == (
        f"ModelLoadFailed: load failed: {URI}: model.skops: not a loadable skops file: BadZipFile "
        f"(container server, running, not ready, 2 restarts, last exit code {LOAD_FAILED_EXIT_CODE})"
    )


RAISE = {
    "load": "raise ModelLoadError('model.onnx: not a valid ONNX model')",
    "value": "raise ValueError('unexpected shape')",
    "cancelled": "raise asyncio.CancelledError()",
    "interrupt": "raise KeyboardInterrupt()",
}


@pytest.mark.parametrize(
    ("raised", "exits"),
    [("load", True), ("value", True), ("cancelled", False), ("interrupt", False)],
)
def test_the_server_exits_on_a_load_failure_only_when_asked(tmp_path: Path, raised: str, exits: bool) -> None:
    termination_log = tmp_path / "termination-log"
    termination_log.touch()  # the kubelet mounts an empty file
    script = textwrap.dedent(
        f"""
        import asyncio
        from mlserving.runtimes import ModelLoadError
        from mlserving.runtimes.refusals import exit_if_refused_for_good
        try:
            {RAISE[raised]}
        except BaseException as exc:
            exit_if_refused_for_good(exc, model={URI!r})
        print("still running")
        """
    )
    env = {EXIT_ENV: "true", TERMINATION_PATH_ENV: str(termination_log)}
    asked = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    if not exits:
        assert (asked.returncode, asked.stdout.strip()) == (0, "still running"), asked.stderr
        assert termination_log.read_text() == ""
        return
    assert asked.returncode == LOAD_FAILED_EXIT_CODE, asked.stderr
    report = json.loads(termination_log.read_text())
    assert report["reason"] == MODEL_LOAD_FAILED and report["message"].startswith(f"load failed: {URI}: ")
    assert json.loads(asked.stderr.strip().splitlines()[-1]) == report
    not_asked = subprocess.run(
        [sys.executable, "-c", script],
        env={TERMINATION_PATH_ENV: str(termination_log)},
        capture_output=True,
        text=True,
    )
    assert (not_asked.returncode, not_asked.stdout.strip()) == (0, "still running")
