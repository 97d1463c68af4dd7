"""The Prometheus fixture scrapes a real exporter process and answers PromQL."""

from __future__ import annotations

import sys
import textwrap

import pytest

from support import free_port, running

pytestmark = pytest.mark.integration


def test_prometheus_scrapes_a_real_exporter(prometheus, tmp_path):
    port = free_port()
    script = textwrap.dedent(
        f"""
        import time
        from prometheus_client import Counter, start_http_server
        c = Counter("fixture_probe_total", "probe", ["kind"])
        c.labels(kind="ok").inc(3)
        start_http_server({port}, addr="127.0.0.1")
        while True:
            time.sleep(1)
        """
    )
    with running(
        [sys.executable, "-c", script],
        tmp_path / "exporter.log",
        ready_url=f"http://127.0.0.1:{port}/metrics",
    ):
        prometheus.set_targets([([f"127.0.0.1:{port}"], {"revision": "abc"})])
        series = prometheus.wait_for_series('fixture_probe_total{kind="ok"}')
        assert series[0]["metric"]["revision"] == "abc"
        assert float(series[0]["value"][1]) == 3.0
