"""A new model version that downloads but does not load (a truncated ONNX file), on the playground
with real processes.

The model server of the candidate revision ends with a report (``ModelLoadFailed``, naming the model
URI and the error) that the kubelet keeps as the container's termination message; the operator says
it while it waits and, at the progress deadline, rolls the candidate back naming the file and why,
instead of a bare "not ready". The stable revision serves every request through the router all along.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playground_faults import FaultRun, World, assert_rolled_back, canary, condition, fault_playground
from rollout_support import revision_of, with_model

pytestmark = [pytest.mark.integration, pytest.mark.faults]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[World]:
    with fault_playground(tmp_path_factory.mktemp("model-load")) as world:
        yield world


def test_a_model_that_fails_to_load_rolls_back_naming_the_file_and_the_error(world: World, tmp_path):
    corrupt = tmp_path / "iris-v2.onnx"
    data = world.models.classifier_onnx.read_bytes()
    corrupt.write_bytes(data[: len(data) // 2])  # a download cut short
    uri, why = corrupt.as_uri(), "not a valid ONNX model"
    base = canary("load", world.models.classifier_onnx.as_uri())
    stable, candidate = revision_of(base), revision_of(with_model(base, uri))
    with FaultRun.of(world, base) as run:
        run.wait(lambda s: s.get("phase") == "Healthy", 60, "v1 Healthy")
        run.start()
        run.patch_model(uri)
        # while it waits, the status already says why the candidate is not ready
        waiting = run.wait(
            lambda s: condition(s, "CandidateReady").get("reason") == "ModelLoadFailed",
            20,
            "the load failure reported while waiting",
        )
        assert waiting["phase"] == "Progressing", waiting
        ready = condition(waiting, "CandidateReady")
        assert ready["status"] == "False" and uri in ready["message"] and why in ready["message"], ready

        assert_rolled_back(run, stable, candidate, "ModelLoadFailed", f"load failed: {uri}", why)
        assert run.answers() >= 20, "traffic went through the router during the rollout"
        run.stop()
        run.assert_stable_served_everything(stable, candidate)
