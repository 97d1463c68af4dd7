"""Experiments end to end over HTTP: the operator process (Experiment controller) on the API emulator,
two real router replicas serving the route table it writes, real model servers behind the
ModelDeployments, a real Prometheus scraping the routers, and simulated users whose reward
probability depends on the variant that answered them. One emulator, Prometheus, operator and set of
model servers serve the module; each test has its own namespace and routers."""

from __future__ import annotations

import contextlib
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from experiment_env import (
    EXP_PATH,
    Api,
    TableSync,
    events,
    experiment_status,
    model_servers,
    routers,
    serve_model_deployment,
    signing_key,
    start_operator,
    train_classifier,
)

from support import free_port, require_binary, wait_until
from support.prometheus import PrometheusServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REVISIONS = {"md-a": "r1a", "md-b": "r1b", "md-c": "r1c"}
ROW = [5.1, 3.5, 1.4, 0.2]


class Env:
    def __init__(self, workdir: Path, stack: contextlib.ExitStack) -> None:
        require_binary("prometheus")
        self.workdir = workdir
        self.prom = PrometheusServer(workdir / "prometheus").start()
        stack.callback(self.prom.stop)
        self.api = Api(workdir)
        stack.callback(self.api.stop)
        self.model = train_classifier(workdir / "model.skops")
        self.servers = stack.enter_context(model_servers(workdir, self.model, REVISIONS))
        self.operator, self.operator_metrics = start_operator(self.api, workdir, self.prom.url, tick=0.5)
        stack.callback(lambda: self.operator.stop())

    def restart_operator(self) -> None:
        self.operator.kill()
        self.operator.stop()
        self.operator, self.operator_metrics = start_operator(self.api, self.workdir, self.prom.url, tick=0.5)

    def services(self, ns: str, dead: str | None = None) -> dict[str, str]:
        """Service name -> local URL of its server; ``dead`` points at a closed port."""
        out = {f"{md}-{rev}": self.servers[md] for md, rev in REVISIONS.items()}
        if dead is not None:
            out[f"{dead}-{REVISIONS[dead]}"] = f"http://127.0.0.1:{free_port()}"
        return out

    def scrape(self, replicas) -> None:
        self.prom.set_targets([([r.url.removeprefix("http://") for r in replicas], {})])


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[Env]:
    with contextlib.ExitStack() as stack:
        yield Env(tmp_path_factory.mktemp("experiments"), stack)


class Users:
    """Simulated users: each request goes to one router replica and its feedback to the other one.

    The reward is 1 with the probability of the variant that answered (``x-mlrollouts-variant``)."""

    def __init__(
        self, replicas, model: str, reward_probability: dict[str, float], rate: float = 40, workers: int = 4
    ) -> None:
        self.replicas, self.model, self.p = replicas, model, reward_probability
        self.workers = workers
        self.period = workers / rate  # seconds between two requests of one user thread
        self.served: Counter[str] = Counter()
        self.feedback: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.feedback_to: Counter[int] = Counter()
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> Users:
        for i in range(self.workers):
            thread = threading.Thread(target=self._run, args=(i,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def recent(self) -> Counter[str]:
        with self.lock:
            return Counter(self.served)

    def recent_feedback(self) -> Counter[str]:
        with self.lock:
            return Counter(self.feedback)

    def _run(self, worker: int) -> None:
        rng = random.Random(worker)
        body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64", "data": ROW}]}
        with httpx.Client(timeout=10) as client:
            n = 0
            next_at = time.monotonic()
            while not self._stop.is_set():
                # a steady request rate, so the amount of data per interval does not depend on the machine
                next_at += self.period
                if self._stop.wait(max(0.0, next_at - time.monotonic())):
                    break
                n += 1
                first = (worker + n) % len(self.replicas)
                other = (first + 1) % len(self.replicas)
                user = f"user-{rng.randrange(2000)}"
                try:
                    response = client.post(
                        f"{self.replicas[first].url}/v2/models/{self.model}/infer",
                        json=body,
                        headers={"x-user-id": user},
                    )
                except httpx.HTTPError:
                    continue
                variant = response.headers.get("x-mlrollouts-variant", "?")
                if response.status_code != 200:
                    with self.lock:
                        self.errors[variant] += 1
                    continue
                reward = 1.0 if rng.random() < self.p[variant] else 0.0
                answer = client.post(
                    f"{self.replicas[other].url}/v2/models/{self.model}/feedback",
                    json={"id": response.headers["x-mlrollouts-id"], "reward": reward},
                )
                with self.lock:
                    self.served[variant] += 1
                    if answer.status_code == 200:
                        self.feedback[variant] += 1
                        self.feedback_to[other] += 1


def create_experiment(env: Env, ns: str, name: str, spec: dict) -> None:
    variants = [{"name": md.removeprefix("md-"), "modelDeployment": md} for md in REVISIONS]
    body = {
        "apiVersion": "mlrollouts.io/v1alpha1",
        "kind": "Experiment",
        "metadata": {"name": name},
        "spec": {"variants": variants, **spec},
    }
    env.api.request("POST", EXP_PATH.format(ns=ns), body)


def new_namespace(env: Env) -> str:
    ns = f"t-{uuid.uuid4().hex[:8]}"
    env.api.request(
        "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
    )
    for md, rev in REVISIONS.items():
        serve_model_deployment(env.api, ns, md, env.model.as_uri(), rev)
    return ns


def wait_status(env: Env, ns: str, name: str, predicate, timeout: float, what: str) -> dict:
    def check():
        status = experiment_status(env.api, ns, name)
        return status if predicate(status) else None

    try:
        return wait_until(check, timeout=timeout, interval=0.3, message=what)
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\nstatus: {experiment_status(env.api, ns, name)}\n"
            f"operator log tail:\n{env.operator.output()[-4000:]}"
        ) from None


def variants_of(status: dict) -> dict[str, dict]:
    return {v["name"]: v for v in status.get("variants") or []}


def test_thompson_converges_to_the_best_variant_and_concludes(env: Env, tmp_path: Path):
    ns, name = new_namespace(env), "bandit"
    create_experiment(
        env,
        ns,
        name,
        {
            "policy": {"type": "ThompsonSampling", "floor": 10, "maxWeightChange": 25, "seed": 11},
            "interval": "3s",
            "decision": {
                "method": "Bayesian",
                "probabilityToBeBest": 0.95,
                "expectedLossThreshold": 0.01,
                "minSamplesPerVariant": 120,
            },
            "onConclusion": "RouteToWinner",
            "reward": {"source": "Feedback", "distribution": "Bernoulli", "rewardWait": "1s"},
            "traffic": {"provider": "Router", "stickiness": {"header": "x-user-id"}},
        },
    )
    key = signing_key(env.api, ns, name)
    sync = TableSync(env.api, ns, f"{name}-routes", tmp_path / "routes.yaml", env.services(ns)).start()
    try:
        with routers(tmp_path, sync.path, key) as replicas:
            env.scrape(replicas)
            with Users(replicas, name, {"a": 0.1, "b": 0.2, "c": 0.5}) as users:
                # a crash of the operator after the first adaptive change: a new one resumes
                wait_until(lambda: sync.applied[-1]["c"] >= 50, timeout=60, message="c at 50 % or more")
                started_at = experiment_status(env.api, ns, name)["startedAt"]
                env.restart_operator()
                status = wait_status(
                    env, ns, name, lambda s: s.get("phase") == "Concluded", 90, "experiment Concluded"
                )
                posted = sum(users.recent_feedback().values())
                # after the conclusion the routers send everyone to the winner
                wait_until(lambda: sync.applied[-1] == {"a": 0, "b": 0, "c": 100}, timeout=10)
                # (the first window lets both replicas load the new table)
                for _ in range(2):
                    before = users.recent()
                    wait_until(lambda b=before: users.recent()["c"] >= b["c"] + 30, timeout=20)
                after = users.recent()
            counted = {r.url: r.metric("mlrouter_feedback_total", route=name) for r in replicas}
    finally:
        sync.stop()

    winner = status["winner"]
    assert winner["variant"] == "c" and winner["reason"] == "WinnerFound"
    assert status["startedAt"] == started_at
    assert winner["evidence"]["probabilityToBeBest"] >= 0.95
    assert winner["evidence"]["expectedLoss"] <= 0.01
    stats = variants_of(status)
    assert stats["c"]["mean"] > stats["a"]["mean"] and stats["c"]["mean"] > stats["b"]["mean"]
    # the sample size of a Bernoulli arm: its eligible requests (older than rewardWait), or its
    # rewards when more of them were scraped
    assert all(max(stats[v]["requests"], stats[v]["rewardCount"]) >= 120 for v in "abc")
    assert stats["c"]["interval"]["low"] < stats["c"]["mean"] < stats["c"]["interval"]["high"]
    assert {v: stats[v]["weight"] for v in "abc"} == {"a": 0, "b": 0, "c": 100}
    # on the way the split moved towards c, never below the 10 % floor, and each change was an event
    adaptive = sync.applied[:-1]
    assert len(adaptive) >= 2 and adaptive[-1]["c"] >= 50 > adaptive[0]["c"]
    assert all(w >= 10 for split in adaptive for w in split.values())
    reasons = [e["reason"] for e in events(env.api, ns, name)]
    detail = [
        (e["reason"], e.get("message"), e.get("firstTimestamp"), e.get("count"))
        for e in events(env.api, ns, name)
    ]
    assert reasons.count("Started") == 1 and "Concluded" in reasons and reasons.count("WeightChanged") >= 2, (
        detail
    )
    assert after["a"] == before["a"] and after["b"] == before["b"]
    # feedback answered by the other replica: both replicas credited some, each exactly once
    assert all(count > 0 for count in counted.values())
    assert sum(counted.values()) == sum(users.feedback.values())
    # the controller adds up both replicas' series per variant: what it counted was posted once
    # (Prometheus' increase() extrapolates a little)
    assert sum(stats[v]["rewardCount"] for v in "abc") <= 1.1 * posted
    assert not users.errors


def test_guardrail_breach_removes_the_variant(env: Env, tmp_path: Path):
    ns, name = new_namespace(env), "guarded"
    errors = (
        '(sum(rate(mlrouter_requests_total{route="{{ name }}",variant="{{ variant }}",code=~"5.."}[{{ interval }}]))'
        ' or vector(0)) / sum(rate(mlrouter_requests_total{route="{{ name }}",variant="{{ variant }}"}[{{ interval }}]))'
    )
    create_experiment(
        env,
        ns,
        name,
        {
            "policy": {"type": "ThompsonSampling", "floor": 10, "seed": 3},
            "interval": "3s",
            "guardrails": [{"name": "router-errors", "query": errors, "max": 0.2, "window": "4s"}],
            "decision": {"minSamplesPerVariant": 100000},
        },
    )
    key = signing_key(env.api, ns, name)
    # variant c's revision does not answer: its requests fail at the router with 502
    sync = TableSync(
        env.api, ns, f"{name}-routes", tmp_path / "routes.yaml", env.services(ns, dead="md-c")
    ).start()
    try:
        with routers(tmp_path, sync.path, key) as replicas:
            env.scrape(replicas)
            with Users(replicas, name, {"a": 0.3, "b": 0.3, "c": 0.3}) as users:
                status = wait_status(
                    env,
                    ns,
                    name,
                    lambda s: variants_of(s).get("c", {}).get("guardrail") == "Breached",
                    60,
                    "variant c Breached",
                )
                wait_until(lambda: sync.applied[-1]["c"] == 0, timeout=10)
                before = users.errors["c"]
                total = sum(users.recent().values())
                wait_until(lambda: sum(users.recent().values()) >= total + 50, timeout=20)
                served_after = users.recent()
                errors_after = users.errors["c"]
    finally:
        sync.stop()

    c = variants_of(status)["c"]
    assert c["weight"] == 0 and "router-errors" in c["guardrailMessage"]
    assert {variants_of(status)[v]["guardrail"] for v in "ab"} <= {"Ok", "Unknown"}
    assert sync.applied[-1]["a"] + sync.applied[-1]["b"] == 100
    assert status["phase"] == "Running"
    assert served_after["a"] > 0 and served_after["b"] > 0
    # once removed, c gets no more traffic (a few requests may have been in flight)
    assert errors_after - before <= 12
    warnings = [e for e in events(env.api, ns, name) if e["reason"] == "GuardrailBreached"]
    assert warnings and "'c'" in warnings[0]["message"]


def test_pending_until_the_model_deployments_serve_then_abort(env: Env):
    ns, name = f"t-{uuid.uuid4().hex[:8]}", "waiting"
    env.api.request(
        "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
    )
    create_experiment(env, ns, name, {"policy": {"type": "EpsilonGreedy", "epsilon": 0.2}, "interval": "2s"})
    status = wait_status(env, ns, name, lambda s: s.get("phase") == "Pending", 20, "experiment Pending")
    assert "md-a" in status["message"]
    assert env.api.get(f"/api/v1/namespaces/{ns}/configmaps/{name}-routes") is None
    for md, rev in REVISIONS.items():
        serve_model_deployment(env.api, ns, md, env.model.as_uri(), rev)
    status = wait_status(env, ns, name, lambda s: s.get("phase") == "Running", 20, "experiment Running")
    assert sum(v["weight"] for v in status["variants"]) == 100
    router = env.api.get(f"/apis/apps/v1/namespaces/{ns}/deployments/{name}-router")
    assert router is not None and router["metadata"]["ownerReferences"][0]["kind"] == "Experiment"
    path = f"{EXP_PATH.format(ns=ns)}/{name}"
    env.api.request(
        "PATCH",
        path,
        {"metadata": {"annotations": {"mlrollouts.io/action": "abort"}}},
        "application/merge-patch+json",
    )
    status = wait_status(env, ns, name, lambda s: s.get("phase") == "Stopped", 20, "experiment Stopped")
    assert status["winner"]["reason"] == "Aborted" and "variant" not in status["winner"]
    wait_until(
        lambda: (
            "mlrollouts.io/action" not in (env.api.request("GET", path)["metadata"].get("annotations") or {})
        ),
        timeout=10,
        message="action annotation removed",
    )
    # the operator's own metrics follow the phase
    stopped = f'mlrollouts_experiment_phase{{name="{name}",namespace="{ns}",phase="Stopped"}} 1.0'
    wait_until(
        lambda: stopped in httpx.get(env.operator_metrics, timeout=5).text, timeout=10, message=stopped
    )
    # the ModelDeployments were only read
    md = env.api.request("GET", f"/apis/mlrollouts.io/v1alpha1/namespaces/{ns}/modeldeployments/md-a")
    assert md["metadata"]["generation"] == 1
