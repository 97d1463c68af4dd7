"""Metric providers: where check values come from. Only this package talks to Prometheus.

A provider answers two kinds of queries, and never raises for a failed query:

- :meth:`MetricProvider.query` -> a finite ``float``, :class:`NoValues` (empty vector, NaN, Inf) or
  :class:`QueryError` (unreachable, timeout, HTTP error, bad PromQL, several series);
- :meth:`MetricProvider.query_vector` -> the labelled samples of an instant vector, or a ``QueryError``.
"""

from __future__ import annotations

import abc
import ast
import asyncio
import contextlib
import json
import math
import re
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, cast

import requests
import urllib3
from prometheus_api_client.exceptions import PrometheusApiClientException
from prometheus_api_client.prometheus_connect import PrometheusConnect
from urllib3.util.retry import Retry

from mlrollouts.analysis.verdicts import NoValues, QueryError, QueryOutcome, finite_or_no_values

DEFAULT_TIMEOUT = 5.0
MAX_CONCURRENT_QUERIES = 10


@dataclass(frozen=True)
class Sample:
    """One series of an instant vector."""

    labels: Mapping[str, str]
    value: float


class MetricProvider(abc.ABC):
    """A source of metric values for checks (one implementation per monitoring system)."""

    @abc.abstractmethod
    async def query_vector(self, promql: str, at: float | None = None) -> list[Sample] | QueryError:
        """All series of an instant query, evaluated now or at the Unix time ``at``."""

    async def query(self, promql: str, at: float | None = None) -> QueryOutcome:
        """The single value of a query that must return at most one series."""
        samples = await self.query_vector(promql, at)
        if isinstance(samples, QueryError):
            return samples
        if not samples:
            return NoValues("the query returned an empty vector")
        if len(samples) > 1:
            shown = ", ".join(_labels_text(s.labels) for s in samples[:3])
            more = f" and {len(samples) - 3} more" if len(samples) > 3 else ""
            return QueryError(
                f"the query returned {len(samples)} series ({shown}{more}); "
                "aggregate them to one value, e.g. with sum(...)"
            )
        return finite_or_no_values(samples[0].value)

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the default does nothing."""


def _labels_text(labels: Mapping[str, str]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


_STATUS = re.compile(r"HTTP Status Code (\d+) \((.*)\)$", re.DOTALL)


def _api_error_reason(exc: PrometheusApiClientException) -> str:
    """Turn the client's ``HTTP Status Code 400 (b'{...}')`` into ``HTTP 400 bad_data: <error>``."""
    text = str(exc)
    match = _STATUS.search(text)
    if not match:
        return text
    code, body = match.group(1), match.group(2)
    if body[:2] in ("b'", 'b"'):
        with contextlib.suppress(ValueError, SyntaxError):
            body = ast.literal_eval(body).decode("utf-8", "replace")
    try:
        payload = json.loads(body)
    except ValueError:
        return f"HTTP {code}: {body[:300]}"
    if isinstance(payload, dict) and payload.get("error"):
        kind = payload.get("errorType")
        return f"HTTP {code}{' ' + kind if kind else ''}: {payload['error']}"
    return f"HTTP {code}: {body[:300]}"


@dataclass
class PrometheusProvider(MetricProvider):
    """Prometheus over its HTTP API (through ``prometheus-api-client``).

    The client is synchronous, so each query runs in a worker thread (at most
    ``MAX_CONCURRENT_QUERIES`` at once per provider); ``timeout`` bounds both the HTTP request and
    Prometheus' own evaluation (sent as the ``timeout`` parameter). No retries: the next
    analysis run is the retry, and a failed query is reported as an ``Error`` verdict.
    """

    address: str
    timeout: float = DEFAULT_TIMEOUT
    headers: Mapping[str, str] | None = None
    _client: PrometheusConnect | None = field(default=None, init=False, repr=False)
    _pool: ThreadPoolExecutor | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.address or not re.match(r"^https?://", self.address):
            raise ValueError(f"prometheus address {self.address!r} must be an http:// or https:// URL")
        if not (self.timeout > 0 and math.isfinite(self.timeout)):
            raise ValueError(f"prometheus timeout {self.timeout!r} must be a positive number of seconds")
        self.address = self.address.rstrip("/")

    def _connection(self) -> PrometheusConnect:
        with self._lock:
            if self._client is None:
                # The client's annotations say int seconds and a required dict; requests takes
                # float seconds and None, which is what is passed on.
                self._client = PrometheusConnect(
                    url=self.address,
                    headers=cast(dict[str, str], dict(self.headers) if self.headers else None),
                    retry=Retry(total=0, raise_on_status=False),
                    timeout=cast(int, self.timeout),
                )
            return self._client

    def _query_sync(self, promql: str, at: float | None) -> Any:
        params: dict[str, str] = {"timeout": f"{self.timeout:g}s"}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return self._connection().custom_query(promql, params=params, timeout=cast(int, self.timeout))

    async def _in_thread(self, promql: str, at: float | None) -> Any:
        """Run the synchronous client in a worker thread; the timeout starts when the worker does.

        Waiting for a free worker is not the server's fault: a burst of checks queues up instead of
        timing out. The worker itself is bounded by the HTTP timeout; ``wait_for`` is a backstop.
        """
        loop = asyncio.get_running_loop()
        started = asyncio.Event()

        def job() -> Any:
            loop.call_soon_threadsafe(started.set)
            return self._query_sync(promql, at)

        future = loop.run_in_executor(self._executor(), job)
        waiter = asyncio.ensure_future(started.wait())
        try:
            await asyncio.wait({waiter, future}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        return await asyncio.wait_for(future, self.timeout + 1.0)

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                # As many workers as the HTTP connection pool keeps connections (urllib3's default 10).
                self._pool = ThreadPoolExecutor(
                    max_workers=MAX_CONCURRENT_QUERIES, thread_name_prefix="prometheus"
                )
            return self._pool

    async def query_vector(self, promql: str, at: float | None = None) -> list[Sample] | QueryError:
        try:
            raw = await self._in_thread(promql, at)
        except (TimeoutError, requests.Timeout):
            return QueryError(f"Prometheus at {self.address} did not answer within {self.timeout:g}s")
        except requests.ConnectionError as exc:
            if _is_timeout(exc):
                return QueryError(f"Prometheus at {self.address} did not answer within {self.timeout:g}s")
            return QueryError(f"cannot reach Prometheus at {self.address}: {_root_cause(exc)}")
        except PrometheusApiClientException as exc:
            return QueryError(f"Prometheus rejected the query: {_api_error_reason(exc)}")
        except requests.RequestException as exc:
            return QueryError(f"request to Prometheus at {self.address} failed: {exc}")
        except (ValueError, KeyError, TypeError) as exc:
            return QueryError(f"unexpected answer from Prometheus at {self.address}: {exc!r}")
        return _parse_result(raw)

    async def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        if client is not None:
            client.close()


def _is_timeout(exc: BaseException) -> bool:
    """Whether a (wrapped) connection error is really a timeout; urllib3 nests it in ``.reason``."""
    seen: set[int] = set()
    todo: list[object] = [exc]
    while todo:
        item = todo.pop()
        if id(item) in seen or not isinstance(item, BaseException):
            continue
        seen.add(id(item))
        if isinstance(item, urllib3.exceptions.NewConnectionError):
            return False  # a subclass of the timeout errors in urllib3, but a refused connection
        if isinstance(item, TimeoutError | urllib3.exceptions.TimeoutError):
            return True
        todo.extend([item.__cause__, item.__context__, getattr(item, "reason", None), *item.args])
    return False


def _root_cause(exc: BaseException) -> str:
    seen = exc
    while seen.__cause__ is not None or seen.__context__ is not None:
        seen = seen.__cause__ or seen.__context__  # type: ignore[assignment]
    text = str(seen) or type(seen).__name__
    # urllib3 wraps the OS error text in long reprs; the tail names the cause.
    if "Errno" in text:
        text = text[text.find("[Errno") :].rstrip(")'\"")
    return text


def _parse_result(raw: Any) -> list[Sample] | QueryError:
    if not isinstance(raw, list):
        return QueryError(f"unexpected answer from Prometheus: {str(raw)[:200]}")
    if len(raw) == 2 and not isinstance(raw[0], dict):
        # A scalar (or string) result: [<time>, "<value>"].
        try:
            return [Sample({}, float(raw[1]))]
        except (TypeError, ValueError):
            return QueryError(f"the query returned a non-numeric value {raw[1]!r}")
    samples: list[Sample] = []
    for series in raw:
        if not isinstance(series, dict):
            return QueryError(f"unexpected answer from Prometheus: {str(raw)[:200]}")
        if "values" in series:
            return QueryError("the query returned a range vector; wrap it in a function such as rate(...)")
        try:
            value = float(series["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            return QueryError(f"unexpected series in the answer: {str(series)[:200]}")
        samples.append(Sample(dict(series.get("metric", {})), value))
    return samples


_providers: dict[tuple[str, float], PrometheusProvider] = {}
_providers_lock = threading.Lock()


def prometheus_provider(address: str, timeout: float = DEFAULT_TIMEOUT) -> PrometheusProvider:
    """A shared provider per (address, timeout), so connections are reused across analysis runs."""
    key = (address.rstrip("/"), float(timeout))
    with _providers_lock:
        provider = _providers.get(key)
        if provider is None:
            provider = _providers[key] = PrometheusProvider(address, timeout)
        return provider
