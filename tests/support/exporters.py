"""A metrics exporter that plays one serving revision (and optionally its router variant) for tests.

It is a real process that serves Prometheus metrics with the names and labels of the serving
contract, driven by simulated traffic whose shape you set on the command line and change at runtime.
Nothing is random except the latency jitter (seeded): errors, slow requests, prediction buckets,
shadow agreement and rewards are spread evenly, so a ratio of 0.25 is exactly every fourth request.

Run it::

    python tests/support/exporters.py --port 9101 --model iris --revision abc123 \\
        --rps 50 --error-ratio 0.02 --latency 0.02 --tail-ratio 0.02 --tail-latency 1.0 \\
        --predictions setosa=0.3,versicolor=0.3,virginica=0.4 [--route iris --variant abc123]

or from a test (it picks a free port, waits until ready, stops the process afterwards)::

    from support.exporters import serving_exporter
    with serving_exporter(tmp_path, model="iris", revision="abc123", rps=50) as exp:
        prometheus.set_targets([([exp.target], {})])
        exp.update(error_ratio=0.5)           # change the traffic shape while it runs
        exp.config()                          # the current settings, as a dict

HTTP endpoints (all on ``--port``, bound to ``--host``, default 127.0.0.1):

- ``GET /metrics``: the Prometheus exposition.
- ``GET /control``: the current settings as JSON.
- ``POST /control`` with a JSON object of settings to change (the keys of ``--help``, with ``_``):
  200 and the new settings; 400 ``{"error": ...}`` naming the bad key or value (nothing changes).
- ``GET /healthz``: 200 ``ok``.

Metrics (label values ``model``, ``revision`` from the flags; ``code`` is ``200`` or ``500``):

- ``mlserving_requests_total{model,revision,code}``
- ``mlserving_request_duration_seconds{model,revision}`` (histogram, default buckets): each request
  takes ``latency`` seconds (+/- ``jitter`` as a fraction), except a share ``tail_ratio`` that takes
  ``tail_latency``, so a tail regression can move p99 without moving p50/p95.
- ``mlserving_predictions_total{model,revision,output,bucket}``: one prediction per successful request,
  spread over the buckets of ``predictions`` (``bucket=weight,...``) in proportion to the weights.
- ``mlserving_feedback_total{model,revision}``, ``mlserving_reward_sum{model,revision}``,
  ``mlserving_reward_sum_squares{model,revision}``: a share ``feedback_ratio`` of successful requests
  gets feedback with reward 1 for a share ``reward_mean`` of them and 0 otherwise, or, when
  ``rewards`` is set (``"2,-3"`` or a list of numbers), the values of ``rewards`` in turn (unbounded,
  possibly negative rewards; ``reward_mean`` is then unused).
- With ``--route``: the router's view of the same traffic for variant ``--variant`` (default: the
  revision): ``mlrouter_requests_total{route,variant,code}``,
  ``mlrouter_request_duration_seconds{route,variant}``, ``mlrouter_feedback_total{route,variant}``,
  ``mlrouter_reward_sum{route,variant}``, ``mlrouter_reward_sum_squares{route,variant}`` and, when ``shadow_agreement`` is set (a share in 0..1),
  ``mlrouter_shadow_agreement_total{route,variant,agree="true"|"false"}``.

All series are created at 0 at start, so ``rate`` and ``increase`` see the first requests.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

TICK_SECONDS = 0.05


def parse_predictions(text: str) -> dict[str, float]:
    """``a=0.7,b=0.3`` -> ``{"a": 0.7, "b": 0.3}``; weights need not sum to 1."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        bucket, sep, weight = part.partition("=")
        if not sep or not bucket.strip():
            raise ValueError(f"predictions: expected bucket=weight, got {part!r}")
        value = float(weight)
        if value < 0:
            raise ValueError(f"predictions: weight of {bucket!r} must be >= 0")
        out[bucket.strip()] = value
    if not out or sum(out.values()) <= 0:
        raise ValueError("predictions: give at least one bucket with a positive weight")
    return out


@dataclass
class Settings:
    rps: float = 20.0
    error_ratio: float = 0.0
    latency: float = 0.02
    jitter: float = 0.1
    tail_ratio: float = 0.0
    tail_latency: float = 1.0
    predictions: dict[str, float] = field(default_factory=lambda: {"a": 0.5, "b": 0.5})
    output: str = "label"
    feedback_ratio: float = 0.0
    reward_mean: float = 0.0
    rewards: list[float] | None = None
    shadow_agreement: float | None = None

    def updated(self, changes: dict[str, Any]) -> Settings:
        """A copy with ``changes`` applied; ``ValueError`` names the first bad key or value."""
        known = {f.name for f in fields(self)}
        new = asdict(self)
        for key, value in changes.items():
            if key not in known:
                raise ValueError(f"unknown setting {key!r}; known: {', '.join(sorted(known))}")
            if key == "predictions":
                new[key] = parse_predictions(value) if isinstance(value, str) else _predictions_dict(value)
            elif key == "output":
                if not isinstance(value, str) or not value:
                    raise ValueError("output must be a non-empty string")
                new[key] = value
            elif key == "shadow_agreement" and value is None:
                new[key] = None
            elif key == "rewards":
                new[key] = _reward_list(value)
            else:
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ValueError(f"{key} must be a number, got {value!r}")
                new[key] = float(value)
        settings = Settings(**new)
        settings.check()
        return settings

    def check(self) -> None:
        if self.rps < 0:
            raise ValueError("rps must be >= 0")
        for name in ("error_ratio", "tail_ratio", "feedback_ratio", "reward_mean", "jitter"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be within 0..1")
        if self.shadow_agreement is not None and not 0 <= self.shadow_agreement <= 1:
            raise ValueError("shadow_agreement must be within 0..1")
        if self.latency < 0 or self.tail_latency < 0:
            raise ValueError("latency and tail_latency must be >= 0")


def _reward_list(value: Any) -> list[float] | None:
    if value is None or value == "":
        return None
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise ValueError("rewards must be a non-empty list of numbers or a '2,-3' string")
    out = []
    for item in items:
        try:
            number = float(item) if not isinstance(item, bool) else float("nan")
        except (TypeError, ValueError):
            number = float("nan")
        if number != number or number in (float("inf"), float("-inf")):
            raise ValueError(f"rewards: {item!r} is not a finite number")
        out.append(number)
    return out


def _predictions_dict(value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        raise ValueError("predictions must be an object bucket -> weight or a 'a=0.5,b=0.5' string")
    return parse_predictions(",".join(f"{k}={v}" for k, v in value.items()))


class _Spread:
    """Deterministic Bernoulli: ``take(p)`` is true for exactly a share ``p`` of calls, evenly spread."""

    def __init__(self) -> None:
        self.acc = 0.0

    def take(self, p: float) -> bool:
        self.acc += p
        if self.acc >= 1.0 - 1e-9:
            self.acc -= 1.0
            return True
        return False


class Simulator:
    def __init__(self, args: argparse.Namespace, settings: Settings) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

        disable_created_metrics()

        self.registry = CollectorRegistry()
        self.settings = settings
        self.lock = threading.Lock()
        self.rng = random.Random(args.seed)
        self.spreads = {k: _Spread() for k in ("error", "tail", "feedback", "reward", "agree")}
        self.reward_turn = 0
        self.bucket_counts: dict[str, int] = {}
        self.model, self.revision = args.model, args.revision
        server = ["model", "revision"]
        self.requests = Counter("mlserving_requests", "Requests", [*server, "code"], registry=self.registry)
        self.duration = Histogram(
            "mlserving_request_duration_seconds", "Request duration", server, registry=self.registry
        )
        self.predictions = Counter(
            "mlserving_predictions",
            "Predictions by bucket",
            [*server, "output", "bucket"],
            registry=self.registry,
        )
        self.feedback = Counter("mlserving_feedback", "Feedback received", server, registry=self.registry)
        # A gauge keeps the exact contract name (a Counter would add "_total"); it only ever grows here.
        self.reward = Gauge("mlserving_reward_sum", "Sum of rewards", server, registry=self.registry)
        self.reward_squares = Gauge(
            "mlserving_reward_sum_squares", "Sum of squared rewards", server, registry=self.registry
        )
        self.route = args.route
        self.variant = args.variant or args.revision
        if self.route:
            router = ["route", "variant"]
            self.r_requests = Counter(
                "mlrouter_requests", "Router requests", [*router, "code"], registry=self.registry
            )
            self.r_duration = Histogram(
                "mlrouter_request_duration_seconds", "Router request duration", router, registry=self.registry
            )
            self.r_feedback = Counter("mlrouter_feedback", "Router feedback", router, registry=self.registry)
            self.r_reward = Gauge("mlrouter_reward_sum", "Router reward sum", router, registry=self.registry)
            self.r_reward_squares = Gauge(
                "mlrouter_reward_sum_squares", "Router sum of squared rewards", router, registry=self.registry
            )
            self.r_shadow = Counter(
                "mlrouter_shadow_agreement", "Shadow agreement", [*router, "agree"], registry=self.registry
            )
        self._init_series()

    def _init_series(self) -> None:
        m, r = self.model, self.revision
        for code in ("200", "500"):
            self.requests.labels(m, r, code)
        self.duration.labels(m, r)
        self.feedback.labels(m, r)
        self.reward.labels(m, r)
        self.reward_squares.labels(m, r)
        for bucket in self.settings.predictions:
            self.predictions.labels(m, r, self.settings.output, bucket)
        if self.route:
            for code in ("200", "500"):
                self.r_requests.labels(self.route, self.variant, code)
            self.r_duration.labels(self.route, self.variant)
            self.r_feedback.labels(self.route, self.variant)
            self.r_reward.labels(self.route, self.variant)
            self.r_reward_squares.labels(self.route, self.variant)
            if self.settings.shadow_agreement is not None:
                for agree in ("true", "false"):
                    self.r_shadow.labels(self.route, self.variant, agree)

    def apply(self, changes: dict[str, Any]) -> Settings:
        with self.lock:
            self.settings = self.settings.updated(changes)
            self.bucket_counts = {}
            self._init_series()
            return self.settings

    def _bucket(self, predictions: dict[str, float]) -> str:
        # The bucket furthest behind its target share gets the next prediction.
        total_w = sum(predictions.values())
        n = sum(self.bucket_counts.get(b, 0) for b in predictions) + 1
        best = max(predictions, key=lambda b: predictions[b] / total_w * n - self.bucket_counts.get(b, 0))
        self.bucket_counts[best] = self.bucket_counts.get(best, 0) + 1
        return best

    def one_request(self, s: Settings) -> None:
        m, r = self.model, self.revision
        error = self.spreads["error"].take(s.error_ratio)
        code = "500" if error else "200"
        seconds = s.tail_latency if self.spreads["tail"].take(s.tail_ratio) else s.latency
        seconds = max(0.0, seconds * (1 + s.jitter * self.rng.uniform(-1, 1)))
        self.requests.labels(m, r, code).inc()
        self.duration.labels(m, r).observe(seconds)
        if self.route:
            self.r_requests.labels(self.route, self.variant, code).inc()
            self.r_duration.labels(self.route, self.variant).observe(seconds)
        if error:
            return
        self.predictions.labels(m, r, s.output, self._bucket(s.predictions)).inc()
        if s.shadow_agreement is not None and self.route:
            agree = "true" if self.spreads["agree"].take(s.shadow_agreement) else "false"
            self.r_shadow.labels(self.route, self.variant, agree).inc()
        if self.spreads["feedback"].take(s.feedback_ratio):
            if s.rewards:
                reward = s.rewards[self.reward_turn % len(s.rewards)]
                self.reward_turn += 1
            else:
                reward = 1.0 if self.spreads["reward"].take(s.reward_mean) else 0.0
            self.feedback.labels(m, r).inc()
            self.reward.labels(m, r).inc(reward)
            self.reward_squares.labels(m, r).inc(reward * reward)
            if self.route:
                self.r_feedback.labels(self.route, self.variant).inc()
                self.r_reward.labels(self.route, self.variant).inc(reward)
                self.r_reward_squares.labels(self.route, self.variant).inc(reward * reward)

    def run(self, stop: threading.Event) -> None:
        carry = 0.0
        last = time.monotonic()
        while not stop.wait(TICK_SECONDS):
            now = time.monotonic()
            with self.lock:
                s = self.settings
                carry += s.rps * (now - last)
                n = int(carry)
                carry -= n
                for _ in range(n):
                    self.one_request(s)
            last = now


def _handler(sim: Simulator) -> type[BaseHTTPRequestHandler]:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, code: int, payload: Any) -> None:
            self._send(code, json.dumps(payload).encode())

        def do_GET(self) -> None:
            if self.path == "/metrics":
                with sim.lock:
                    body = generate_latest(sim.registry)
                self._send(200, body, CONTENT_TYPE_LATEST)
            elif self.path == "/control":
                with sim.lock:
                    self._json(200, asdict(sim.settings))
            elif self.path == "/healthz":
                self._send(200, b"ok", "text/plain")
            else:
                self._json(404, {"error": f"no such path {self.path}"})

        def do_POST(self) -> None:
            if self.path != "/control":
                self._json(404, {"error": f"no such path {self.path}"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            try:
                changes = json.loads(self.rfile.read(length) or b"{}")
                if not isinstance(changes, dict):
                    raise ValueError("the body must be a JSON object of settings")
                settings = sim.apply(changes)
            except ValueError as exc:
                self._json(400, {"error": str(exc)})
                return
            self._json(200, asdict(settings))

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Play one serving revision's metrics for tests.")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--model", required=True)
    p.add_argument("--revision", required=True)
    p.add_argument("--route", help="also expose router metrics for this route")
    p.add_argument("--variant", help="router variant label (default: the revision)")
    p.add_argument("--seed", type=int, default=1)
    defaults = Settings()
    p.add_argument("--rps", type=float, default=defaults.rps, help="requests per second")
    p.add_argument("--error-ratio", type=float, default=defaults.error_ratio, help="share answered 500")
    p.add_argument("--latency", type=float, default=defaults.latency, help="seconds per request")
    p.add_argument("--jitter", type=float, default=defaults.jitter, help="+/- share of latency")
    p.add_argument("--tail-ratio", type=float, default=defaults.tail_ratio, help="share of slow requests")
    p.add_argument(
        "--tail-latency", type=float, default=defaults.tail_latency, help="seconds per slow request"
    )
    p.add_argument("--predictions", default="a=0.5,b=0.5", help="bucket=weight,... of predictions")
    p.add_argument("--output", default=defaults.output, help="output label of the predictions")
    p.add_argument("--feedback-ratio", type=float, default=0.0, help="share of requests with feedback")
    p.add_argument("--reward-mean", type=float, default=0.0, help="share of feedback with reward 1")
    p.add_argument("--rewards", default=None, help="reward values given in turn, e.g. 2,-3")
    p.add_argument(
        "--shadow-agreement", type=float, default=None, help="share of shadowed requests that agree"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings().updated(
            {
                "rps": args.rps,
                "error_ratio": args.error_ratio,
                "latency": args.latency,
                "jitter": args.jitter,
                "tail_ratio": args.tail_ratio,
                "tail_latency": args.tail_latency,
                "predictions": args.predictions,
                "output": args.output,
                "feedback_ratio": args.feedback_ratio,
                "reward_mean": args.reward_mean,
                "rewards": args.rewards,
                "shadow_agreement": args.shadow_agreement,
            }
        )
    except ValueError as exc:
        print(f"exporters: {exc}", file=sys.stderr)
        return 2
    sim = Simulator(args, settings)
    stop = threading.Event()
    ticker = threading.Thread(target=sim.run, args=(stop,), daemon=True)
    ticker.start()
    server = ThreadingHTTPServer((args.host, args.port), _handler(sim))
    import signal

    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        server.server_close()
    return 0


# ---------------------------------------------------------------------------------------------------
# Test-side handle


class Exporter:
    """A running exporter process: ``target`` for Prometheus, ``update()``/``config()`` to steer it."""

    def __init__(self, proc: Any, port: int, model: str, revision: str) -> None:
        self.proc = proc
        self.port = port
        self.model = model
        self.revision = revision
        self.target = f"127.0.0.1:{port}"
        self.url = f"http://127.0.0.1:{port}"

    def _call(self, method: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        import urllib.error
        import urllib.request

        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"{self.url}/control", data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return dict(json.loads(resp.read()))
        except urllib.error.HTTPError as exc:
            raise ValueError(json.loads(exc.read()).get("error", str(exc))) from None

    def update(self, **changes: Any) -> dict[str, Any]:
        """Change settings at runtime (``rps``, ``error_ratio``, ``tail_ratio``, ``predictions`` ...)."""
        return self._call("POST", changes)

    def config(self) -> dict[str, Any]:
        return self._call("GET")

    def stop(self) -> None:
        self.proc.stop()


@contextlib.contextmanager
def serving_exporter(
    workdir: Path,
    *,
    model: str,
    revision: str,
    route: str | None = None,
    variant: str | None = None,
    seed: int = 1,
    **settings: Any,
) -> Iterator[Exporter]:
    """Start an exporter process on a free port, wait for ``/metrics``, stop it on exit.

    ``settings`` are the keys of :class:`Settings` (``rps=50, error_ratio=0.1, predictions="a=1,b=1"``).
    """
    from support import PYTHON, free_port, running

    Settings().updated(settings)  # fail fast, in the test, on a bad setting
    port = free_port()
    argv = [
        PYTHON,
        str(Path(__file__).resolve()),
        "--port",
        str(port),
        "--model",
        model,
        "--revision",
        revision,
    ]
    argv += ["--seed", str(seed)]
    if route:
        argv += ["--route", route]
    if variant:
        argv += ["--variant", variant]
    for key, value in settings.items():
        if key == "predictions" and isinstance(value, dict):
            value = ",".join(f"{k}={v}" for k, v in value.items())
        if key == "rewards" and isinstance(value, list):
            value = ",".join(str(float(v)) for v in value)
        if value is not None:
            # One "--key=value" word, so a negative value is not read as an option.
            argv += [f"--{key.replace('_', '-')}={value}"]
    log = Path(workdir) / f"exporter-{model}-{revision}-{port}.log"
    with running(argv, log, ready_url=f"http://127.0.0.1:{port}/healthz", timeout=30) as proc:
        yield Exporter(proc, port, model, revision)


if __name__ == "__main__":
    sys.exit(main())
