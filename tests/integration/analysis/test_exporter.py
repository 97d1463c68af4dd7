"""The test exporter process: contract metric names and labels, runtime control, bad settings."""

from __future__ import annotations

import time
import urllib.request

import pytest

from support import wait_until
from support.exporters import TICK_SECONDS, serving_exporter

pytestmark = pytest.mark.integration


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            values[series] = float(value)
    return values


def test_exporter_metrics_and_runtime_control(tmp_path):
    with serving_exporter(
        tmp_path, model="m", revision="r1", route="m", rps=200, error_ratio=0.25, predictions="x=3,y=1",
        shadow_agreement=0.5, feedback_ratio=1.0, reward_mean=0.5,
    ) as exp:  # fmt: skip
        wait_until(
            lambda: (
                scrape(exp.url).get('mlserving_requests_total{code="200",model="m",revision="r1"}', 0) >= 60
            )
        )
        m = scrape(exp.url)
        ok = m['mlserving_requests_total{code="200",model="m",revision="r1"}']
        err = m['mlserving_requests_total{code="500",model="m",revision="r1"}']
        assert err / (ok + err) == pytest.approx(0.25, abs=0.02)
        x = m['mlserving_predictions_total{bucket="x",model="m",output="label",revision="r1"}']
        y = m['mlserving_predictions_total{bucket="y",model="m",output="label",revision="r1"}']
        assert x + y == ok and x / (x + y) == pytest.approx(0.75, abs=0.02)
        assert m['mlserving_request_duration_seconds_count{model="m",revision="r1"}'] == ok + err
        assert m['mlrouter_requests_total{code="500",route="m",variant="r1"}'] == err
        assert m['mlrouter_feedback_total{route="m",variant="r1"}'] == ok
        assert m['mlrouter_reward_sum{route="m",variant="r1"}'] == pytest.approx(ok / 2, abs=1)
        assert m['mlrouter_shadow_agreement_total{agree="true",route="m",variant="r1"}'] == pytest.approx(
            ok / 2, abs=1
        )

        with pytest.raises(ValueError, match="unknown setting 'colour'"):
            exp.update(colour="red")
        with pytest.raises(ValueError, match=r"error_ratio must be within 0\.\.1"):
            exp.update(error_ratio=2)
        assert exp.config()["error_ratio"] == 0.25  # a rejected update changes nothing

        settings = exp.update(error_ratio=0, rps=0)
        assert settings["rps"] == 0 and settings["error_ratio"] == 0
        frozen = scrape(exp.url)
        time.sleep(10 * TICK_SECONDS)  # a negative check needs a window: ten ticks of the simulator
        assert scrape(exp.url) == frozen
        assert exp.proc.alive()


def test_bad_settings_fail_before_starting(tmp_path):
    with (
        pytest.raises(ValueError, match="predictions"),
        serving_exporter(tmp_path, model="m", revision="r", predictions="x"),
    ):
        pass
