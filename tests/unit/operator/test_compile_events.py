"""What the resource tells about its revision's compile Job: started, compiled (with the time it
took), failed (with the Job's reason), and the status message while it runs."""

from __future__ import annotations

from mlrollouts.builders import Owner
from mlrollouts.controller.modeldeployment import compile_events, compiling_message

OWNER = Owner(name="trees", namespace="ml", uid="u1")


def job(condition: str | None = None, **status) -> dict:
    if condition:
        status["conditions"] = [
            {
                "type": condition,
                "status": "True",
                "reason": "BackoffLimitExceeded",
                "message": "Job has reached the specified backoff limit",
            }
        ]
    return {"metadata": {"name": "trees-abc-compile"}, "status": status}


def test_a_started_compile_names_its_job():
    (event,) = compile_events(OWNER, "abc", None, started=True)
    assert (event.type, event.reason) == ("Normal", "CompileStarted")
    assert "Job trees-abc-compile" in event.message


def test_a_running_job_tells_nothing_yet():
    assert compile_events(OWNER, "abc", job(active=1), started=False) == []


def test_a_complete_job_says_how_long_it_took():
    done = job("Complete", startTime="2026-12-06T10:00:00Z", completionTime="2026-12-06T10:00:07Z")
    (event,) = compile_events(OWNER, "abc", done, started=False)
    assert (event.type, event.reason) == ("Normal", "Compiled")
    assert "model compiled in 7s" in event.message


def test_a_failed_job_is_a_warning_with_its_reason_and_replicas_compile_themselves():
    (event,) = compile_events(OWNER, "abc", job("Failed", failed=4), started=False)
    assert (event.type, event.reason) == ("Warning", "CompileFailed")
    assert "backoff limit" in event.message and "each replica compiles the model itself" in event.message


def test_the_status_message_counts_failed_attempts():
    assert compiling_message(OWNER, "abc", job(active=1)).endswith("(Job trees-abc-compile)")
    assert "2 failed attempts" in compiling_message(OWNER, "abc", job(active=1, failed=2))
    assert "1 failed attempt)" in compiling_message(OWNER, "abc", job(active=1, failed=1))
