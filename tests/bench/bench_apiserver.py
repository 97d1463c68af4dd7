"""Requests per second of the API emulator over HTTP, one client, sequential requests.

Run: .venv/bin/python tests/integration/apiserver/bench_apiserver.py [N]
"""

from __future__ import annotations

import sys
import time

import httpx

from mlrollouts.local.apiserver import ApiServer

MERGE = {"Content-Type": "application/merge-patch+json"}


def main(n: int = 500) -> None:
    results = []
    with ApiServer() as api, httpx.Client(base_url=api.url, verify=False) as http:
        http.post("/api/v1/namespaces", json={"metadata": {"name": "bench"}})
        base = "/api/v1/namespaces/bench/configmaps"

        def timed(name: str, count: int, call) -> None:
            start = time.perf_counter()
            for index in range(count):
                call(index)
            results.append((name, count / (time.perf_counter() - start)))

        timed(
            "create ConfigMap",
            n,
            lambda i: http.post(base, json={"metadata": {"name": f"c{i}", "labels": {"i": str(i % 10)}}}),
        )
        timed("get ConfigMap", n, lambda i: http.get(f"{base}/c{i}"))
        timed(
            "merge-patch ConfigMap",
            n,
            lambda i: http.patch(f"{base}/c{i}", json={"data": {"k": str(i)}}, headers=MERGE),
        )
        timed(f"list {n} by labelSelector", 50, lambda i: http.get(base, params={"labelSelector": "i=3"}))
        timed("delete ConfigMap", n, lambda i: http.delete(f"{base}/c{i}"))
    print(f"{'operation':<32}{'requests/s':>12}")
    for name, rate in results:
        print(f"{name:<32}{rate:>12.0f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 500)
