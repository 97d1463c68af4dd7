"""A canary whose serving process exits at start, on the playground with real processes.

The new revision's server is given an argument it does not know (a typo in ``spec.serving.args``):
it exits with code 2 at every start and the process kubelet restarts it with back-off
(``CrashLoopBackOff``, a growing ``restartCount``, the log tail as termination message). The
operator says so in the ``CandidateReady`` condition while it waits, and once ``progressDeadline``
has passed it rolls the candidate back with a condition and an event that name the crash loop and
the server's last words. The stable serves every request through the router, and the route table
never gives the crashing revision any weight.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playground_faults import FaultRun, World, assert_rolled_back, canary, condition, fault_playground
from rollout_support import revision_of

pytestmark = [pytest.mark.integration, pytest.mark.faults]

TYPO = "--max-batch-sise"
LAST_WORDS = f"unrecognized arguments: {TYPO}"


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[World]:
    with fault_playground(tmp_path_factory.mktemp("crash-loop")) as world:
        yield world


def test_crash_looping_canary_is_rolled_back_at_the_progress_deadline(world: World):
    base = canary("crashy", world.models.classifier_onnx.as_uri())
    crashing = {**base, "spec": {**base["spec"], "serving": {"replicas": 1, "args": [TYPO, "4"]}}}
    stable, candidate = revision_of(base), revision_of(crashing)
    with FaultRun.of(world, base) as run:
        run.wait(lambda s: s.get("phase") == "Healthy", 60, "v1 Healthy")
        run.start()
        run.patch_serving({"args": [TYPO, "4"]})

        def crash_looping(status: dict) -> bool:
            ready = condition(status, "CandidateReady")
            return ready.get("reason") == "CrashLoopBackOff" and "restart" in ready.get("message", "")

        waiting = run.wait(crash_looping, 20, "the crash loop reported while waiting")
        assert waiting["phase"] == "Progressing" and waiting["candidateRevision"] == candidate, waiting
        ready = condition(waiting, "CandidateReady")
        assert ready["status"] == "False", ready
        assert LAST_WORDS in ready["message"] and "last exit code 2" in ready["message"], ready
        assert LAST_WORDS in waiting["message"], waiting["message"]

        assert_rolled_back(run, stable, candidate, LAST_WORDS, "last exit code 2", "not ready after")
        assert run.answers() >= 20, "traffic went through the router during the rollout"
        run.stop()
        run.assert_stable_served_everything(stable, candidate)
