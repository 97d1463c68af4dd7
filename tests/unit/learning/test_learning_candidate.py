"""promotion Canary on the data plane: a store that holds serving until a pin moves it, the
``candidate`` pointer the candidate-snapshot replicas follow, and ``POST /v1/candidate``."""

from __future__ import annotations

import copy

import pytest
from learning_testing import KEY, fitted_sgd_classifier
from test_learning_pin import learn, publish, running, until

from mlserving.learning.follower import SnapshotFollower
from mlserving.learning.location import StorageLocation
from mlserving.learning.manifest import SnapshotMissing
from mlserving.learning.pipeline import LearningPipeline, PipelineConfig
from mlserving.learning.snapshots import SnapshotStore


@pytest.fixture
def held(tmp_path) -> SnapshotStore:
    return SnapshotStore(StorageLocation((tmp_path / "store").as_uri()), hold_serving=True)


def test_a_held_store_serves_a_new_snapshot_only_once_pinned(held, iris):
    publish(held, 0, iris)
    assert held.serving() == 0  # the first snapshot (the initial model) is served
    publish(held, 1, iris)
    assert (held.latest(), held.serving()) == (1, 0)
    assert held.pin(1) == 1
    publish(held, 2, iris)
    assert held.serving() == 1


def test_the_candidate_follower_serves_the_candidate_and_else_what_serving_serves(held, tmp_path, iris):
    publish(held, 0, iris)
    publish(held, 1, iris)
    stable = SnapshotFollower(held.location.uri, KEY, download_dir=tmp_path / "stable")
    candidate = SnapshotFollower(held.location.uri, KEY, download_dir=tmp_path / "cand", pointer="candidate")
    assert candidate.target() == 0  # no canary in flight
    held.set_candidate(1)
    assert (stable.target(), candidate.target()) == (0, 1)
    loaded = candidate.poll()
    assert loaded is not None and loaded.version == 1
    held.set_candidate(None)
    assert candidate.target() == 0 and held.candidate() is None
    with pytest.raises(SnapshotMissing, match="snapshot 7"):
        held.set_candidate(7)
    with pytest.raises(ValueError, match="snapshot pointer 'latest'"):
        SnapshotFollower(held.location.uri, KEY, pointer="latest")


async def test_the_learner_sets_the_candidate_and_holds_serving(tmp_path, iris):
    config = PipelineConfig(
        model_name="iris",
        batch_size=8,
        snapshot_every=16,
        flush_interval=0.01,
        unknown_id_wait=0.0,
        hold_serving=True,
    )
    pipeline = LearningPipeline(
        config,
        initial_estimator=copy.deepcopy(fitted_sgd_classifier(iris)),
        location=StorageLocation((tmp_path / "store").as_uri()),
        key=KEY,
    )
    async with running(pipeline) as (client, _):
        await learn(client, iris, 0, 32)
        await until(lambda: (pipeline.snapshot_version or 0) >= 2)
        status = (await client.get("/v1/status")).json()
        assert status["serving"] == 0 and status["latest"] >= 2 and status["candidate"] is None
        answer = await client.post("/v1/candidate", json={"snapshot": 2})
        assert answer.status_code == 200, answer.text
        assert (await client.get("/v1/status")).json()["candidate"] == 2
        assert (await client.post("/v1/candidate", json={"snapshot": 99})).status_code == 404
        bad = await client.post("/v1/candidate", json={"snapshot": "two"})
        assert bad.status_code == 400 and "snapshot" in bad.json()["error"]
        assert (await client.post("/v1/candidate", json={"snapshot": None})).status_code == 200
        assert pipeline.store.candidate() is None
