"""A component of a composite model goes down mid-traffic (SIGSTOP, then SIGKILL): each node's
``onError`` decides the answer, and the router stays up and keeps serving the other graphs.

One real model server (``double``) is the component that fails; it is a child of three ensembles
that differ only in its ``onError``: Fail (the graph answers 504 while it hangs, 502/503 once it is
gone, with a JSON error naming the node), Skip (the ensemble answers from the other children) and
Default (its ``defaultOutputs`` stand in). A fourth graph never calls it and must never fail.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass

import httpx
import pytest
from graph_testing import affine_servers, by_hand, ensemble, graph_route, model, rows_request, value_rows
from router_testing import table

from support import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.faults]

ROW = [1.0, 2.0]
DEFAULT = [9.0, -1.0]
NODE_TIMEOUT = 0.5
GRAPHS = ("fail", "skip", "default", "other")


@dataclass(frozen=True)
class Answer:
    graph: str
    sent: float
    status: int | str  # the exception's name when no HTTP answer came
    body: dict
    headers: httpx.Headers | None


def mean(*rows: list[float]) -> list[float]:
    return [sum(column) / len(rows) for column in zip(*rows, strict=True)]


def graphs_table(healthy: dict, victim_url: str) -> dict:
    shift, swap = model("shift", healthy["shift"].url), model("swap", healthy["swap"].url)
    victim = {**model("victim", victim_url, served="double"), "timeoutSeconds": NODE_TIMEOUT}
    defaults = {"defaultOutputs": [{"name": "value", "datatype": "FP32", "value": DEFAULT}]}
    return table(
        graph_route("fail", "score", shift, swap, victim, ensemble("score", ["shift", "victim", "swap"])),
        graph_route(
            "skip",
            "score",
            shift,
            swap,
            {**victim, "onError": "Skip"},
            ensemble("score", ["shift", "victim", "swap"]),
        ),
        graph_route(
            "default",
            "score",
            shift,
            {**victim, "onError": "Default", **defaults},
            ensemble("score", ["shift", "victim"]),
        ),
        graph_route("other", "score", shift, swap, ensemble("score", ["shift", "swap"])),
    )


class Traffic:
    """One client thread per graph, each sending requests back to back until stopped."""

    def __init__(self, router_url: str) -> None:
        self.url = router_url
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(g,), daemon=True) for g in GRAPHS]

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)

    def _loop(self, graph: str) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self._stop.is_set():
                sent = time.monotonic()
                try:
                    response = client.post(f"/v2/models/{graph}/infer", json=rows_request(ROW))
                except httpx.HTTPError as exc:
                    self.answers.append(Answer(graph, sent, type(exc).__name__, {}, None))
                    continue
                body = (
                    response.json()
                    if response.headers.get("content-type", "").startswith("application/json")
                    else {}
                )
                self.answers.append(Answer(graph, sent, response.status_code, body, response.headers))

    def count(self, graph: str, since: float = 0.0) -> int:
        return sum(1 for a in list(self.answers) if a.graph == graph and a.sent >= since and a.status == 200)

    def between(self, start: float, end: float) -> list[Answer]:
        return [a for a in list(self.answers) if start <= a.sent < end]


def check_down(answers: list[Answer], failing: set[int]) -> None:
    """What each graph answers while the component is down (requests sent after the fault)."""
    shift, swap = by_hand("shift", ROW), by_hand("swap", ROW)
    for answer in answers:
        where = f"{answer.graph}: {answer.status} {answer.body}"
        if answer.graph == "fail":
            assert answer.status in failing, where
            assert answer.body["node"] == "victim" and answer.body["error"], where
            continue
        assert answer.status == 200, where
        value = value_rows(answer.body)
        if answer.graph == "skip":
            assert value == [pytest.approx(mean(shift, swap))], where
            assert answer.headers["x-mlrollouts-graph-skipped"] == "victim", where
            assert answer.body["parameters"]["graph"]["skipped"][0]["node"] == "victim", where
        elif answer.graph == "default":
            assert value == [pytest.approx(mean(shift, DEFAULT))], where
            assert answer.headers["x-mlrollouts-graph-defaulted"] == "victim", where
        else:
            assert value == [pytest.approx(mean(shift, swap))], where


def tally(answers: list[Answer]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {g: {} for g in GRAPHS}
    for answer in answers:
        counts[answer.graph][str(answer.status)] = counts[answer.graph].get(str(answer.status), 0) + 1
    return counts


def test_each_on_error_policy_holds_while_a_component_hangs_or_dies(affine, start_router, tmp_path):
    with affine_servers(tmp_path / "victim", ["double"]) as victims:
        victim = victims["double"]
        router = start_router(graphs_table(affine, victim.url))
        with Traffic(router.url) as traffic:
            wait_until(
                lambda: all(traffic.count(g) >= 3 for g in GRAPHS), timeout=20, message="healthy answers"
            )
            healthy = traffic.between(0, time.monotonic())
            assert {a.status for a in healthy} == {200}, tally(healthy)

            # Hung: the component accepts connections but never answers; its node times out.
            os.kill(victim.proc.pid, signal.SIGSTOP)
            stopped = time.monotonic()
            wait_until(
                lambda: traffic.count("other", stopped) >= 10, timeout=10, message="traffic while hung"
            )
            time.sleep(3 * NODE_TIMEOUT)
            # Every graph answered at least once while hung (each answer from the component's graphs
            # takes its node timeout, so on a loaded machine 1.5 s may hold none of one of them).
            wait_until(
                lambda: all(
                    any(a.graph == g for a in traffic.between(stopped, time.monotonic())) for g in GRAPHS
                ),
                timeout=10,
                message="an answer of every graph while hung",
            )
            os.kill(victim.proc.pid, signal.SIGCONT)
            resumed = time.monotonic()
            hung = traffic.between(stopped, resumed - NODE_TIMEOUT)
            check_down(hung, failing={504})

            wait_until(
                lambda: traffic.count("fail", resumed + NODE_TIMEOUT) >= 3, timeout=10, message="recovered"
            )

            # Dead: connections are refused (in-flight calls break) until it is back.
            victim.proc.kill()
            killed = time.monotonic()
            wait_until(lambda: traffic.count("other", killed) >= 10, timeout=10, message="traffic while dead")
            time.sleep(0.5)
            dead = traffic.between(killed, time.monotonic())
            check_down(dead, failing={502, 503})

        assert router.proc.alive(), router.proc.output()[-3000:]
        assert httpx.get(f"{router.url}/v2/health/live", timeout=5).status_code == 200
        everything = traffic.answers
        counts = tally(everything)
        unexpected_5xx = sum(
            n for g, by_status in counts.items() if g != "fail" for s, n in by_status.items() if s != "200"
        )
        print(f"\nhealthy {tally(healthy)}\nhung {tally(hung)}\ndead {tally(dead)}\nall {counts}")
        print(
            f"5xx of the fail graph: {sum(n for s, n in counts['fail'].items() if s.startswith('5'))}, "
            f"errors of the other graphs: {unexpected_5xx}, router alive: {router.proc.alive()}"
        )
        assert unexpected_5xx == 0, counts
        assert all(isinstance(a.status, int) for a in everything), "the router dropped a connection"
        for phase in (hung, dead):
            assert {a.graph for a in phase} == set(GRAPHS), tally(phase)
