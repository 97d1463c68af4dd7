"""A real Prometheus server (Debian package ``prometheus``) on a loopback port, for tests."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from support import Proc, free_port, require_binary, wait_http, wait_until


class PrometheusServer:
    """Starts ``prometheus`` scraping the given static targets every ``scrape_interval``.

    Targets are ``host:port`` strings; ``labels`` are attached to every series scraped from them.
    Use :meth:`set_targets` to change them while it runs (file-based service discovery).
    """

    def __init__(self, workdir: Path, scrape_interval: str = "1s") -> None:
        self.binary = require_binary("prometheus")
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.sd_file = workdir / "targets.json"
        self.sd_file.write_text("[]")
        config = {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
            "scrape_configs": [
                {
                    "job_name": "tests",
                    "scrape_interval": scrape_interval,
                    "scrape_timeout": scrape_interval,
                    "file_sd_configs": [{"files": [str(self.sd_file)], "refresh_interval": "1s"}],
                }
            ],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.proc: Proc | None = None

    def set_targets(self, groups: list[tuple[list[str], dict[str, str]]]) -> None:
        payload = [{"targets": targets, "labels": labels} for targets, labels in groups]
        tmp = self.sd_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload))
        tmp.replace(self.sd_file)

    def start(self) -> PrometheusServer:
        self.proc = Proc(
            [
                self.binary,
                f"--config.file={self.workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
            ],
            self.workdir / "prometheus.log",
        )
        wait_http(f"{self.url}/-/ready", timeout=60)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = json.loads(resp.read())
        return list(body["data"]["result"])

    def wait_for_series(self, promql: str, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Poll until ``promql`` returns at least one series (the first scrape lands ~6 s after start)."""
        return wait_until(
            lambda: self.query(promql), timeout=timeout, interval=0.5, message=f"series for {promql}"
        )
