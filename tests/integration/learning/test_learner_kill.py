"""kill -9 of the learner while labelled feedback streams in: no acknowledged row is lost, none is
written twice.

Each round restarts the learner on the same storage, logs every request again (as replicas retry
their log batches) and sends the feedback of every id again but those answered 409: the ones never
answered (lost with the process) and a few already acknowledged (a client that missed the answer).
The data log must then hold every acknowledged id, each exactly once, under gap-free seqs.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import httpx
import numpy as np
import pytest
from learner_process import Learner, learner_process, send_logs

from mlserving.learning.datalog import DataLog
from mlserving.learning.location import StorageLocation

pytestmark = [pytest.mark.integration, pytest.mark.faults]

FLAGS = ["--batch-size", "16", "--snapshot-every", "64", "--window", "50"]
REQUESTS = 240
CONCURRENCY = 32


def stream_feedback(
    learner: Learner, labels: dict[int, int], on_answer: Callable[[int, int], None]
) -> dict[int, int | None]:
    """Feedback for ``req-<i>`` of each ``labels`` item, ``CONCURRENCY`` at a time; the status of each
    answer, None when the learner died before answering. ``on_answer`` sees every answer as it
    arrives (and may kill the learner)."""

    async def post_all() -> dict[int, int | None]:
        statuses: dict[int, int | None] = {}
        queue = list(labels.items())
        async with httpx.AsyncClient(base_url=learner.url, timeout=10) as client:

            async def worker() -> None:
                while queue:
                    index, label = queue.pop(0)
                    try:
                        answer = await client.post(
                            "/v2/models/cancer/feedback", json={"id": f"req-{index}", "label": label}
                        )
                    except httpx.TransportError:
                        statuses[index] = None
                        continue
                    statuses[index] = answer.status_code
                    on_answer(index, answer.status_code)

            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return statuses

    return asyncio.run(post_all())


def when(kill_at: float | None) -> str:
    if kill_at is None:
        return "never"
    return f"after ack {kill_at}" if isinstance(kill_at, int) else f"{kill_at} s into the stream"


def test_kill_9_mid_stream_loses_no_acknowledged_row_and_writes_none_twice(tmp_path, cancer):
    model, x, y = cancer
    storage = (tmp_path / "store").as_uri()
    labels = {i: int(y[i]) for i in range(REQUESTS)}
    acknowledged: set[int] = set()  # answered 200
    duplicates: set[int] = set()  # answered 409: the log holds the row already
    # When each round kills the learner: after its n-th acknowledgement (an int: at once, from the
    # client that got it), so many seconds into the stream (a float: whatever is in flight), or
    # never (the last round lets every feedback through).
    kill_after = [1, 40, 0.05, 0.1, None]
    printed = []

    for round_number, kill_at in enumerate(kill_after):
        with learner_process(tmp_path, model, storage, extra=FLAGS) as learner:
            send_logs(learner, x[:REQUESTS], first=0)
            acked_this_round = 0

            def on_answer(index: int, status: int, learner: Learner = learner, kill_at=kill_at) -> None:
                nonlocal acked_this_round
                if status != 200:
                    return
                acknowledged.add(index)
                acked_this_round += 1
                if acked_this_round == kill_at:
                    learner.proc.kill()

            # Everything not yet known to be written, plus 5 acknowledged ids sent again.
            resent = set(sorted(acknowledged)[:5])
            pending = {i: v for i, v in labels.items() if i not in acknowledged and i not in duplicates}
            pending.update({i: labels[i] for i in resent})
            timer = None
            if isinstance(kill_at, float):
                timer = threading.Timer(kill_at, learner.proc.kill)
                timer.start()
            statuses = stream_feedback(learner, pending, on_answer)
            if timer is not None:
                timer.join()

            refused = {i: s for i, s in statuses.items() if s not in (200, 409, None)}
            assert not refused, f"round {round_number}: unexpected answers {refused}"
            acked_twice = {i for i in resent if statuses[i] == 200}
            assert not acked_twice, f"round {round_number}: acknowledged again after a restart: {acked_twice}"
            duplicates |= {i for i, s in statuses.items() if s == 409}
            lost_answers = sum(1 for s in statuses.values() if s is None)
            killed = not learner.proc.alive()
            assert killed == (kill_at is not None), learner.proc.output()[-3000:]
            printed.append(
                f"round {round_number}: kill {when(kill_at)}: sent {len(pending)}, "
                f"200 {acked_this_round}, 409 {sum(1 for s in statuses.values() if s == 409)}, "
                f"no answer {lost_answers}"
            )

    datalog = DataLog(StorageLocation(storage), n_features=x.shape[1], label_kind="int")
    rows = datalog.read_rows()
    ids = rows.request_id
    print("\n".join(printed))
    print(
        f"acknowledged {len(acknowledged)}, answered 409 {len(duplicates)} (of which written before a "
        f"kill took their answer: {len(duplicates - acknowledged)}), rows in the data log {len(rows)}, "
        f"distinct ids {len(set(ids))}"
    )
    assert {f"req-{i}" for i in acknowledged} <= set(ids), "an acknowledged row is missing"
    assert len(ids) == len(set(ids)), "a row was written twice"
    assert rows.seq.tolist() == list(range(len(rows)))
    # The last round ran to the end: every request has its row, with its own label.
    assert set(ids) == {f"req-{i}" for i in range(REQUESTS)}
    assert rows.label == [labels[int(i.removeprefix("req-"))] for i in ids]
    assert np.array_equal(rows.features, x[[int(i.removeprefix("req-")) for i in ids]])
