"""Shared pieces of the router tests: handles on the processes and route-table builders."""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from support import Proc

SIGNING_KEY = "router-tests-signing-key-0123456789"


@dataclass
class Upstream:
    name: str
    url: str
    proc: Proc

    def stats(self) -> dict:
        with urllib.request.urlopen(f"{self.url}/stats", timeout=5) as response:
            return json.load(response)


@dataclass
class Router:
    url: str
    table_path: Path
    proc: Proc

    def write_table(self, table: dict | str) -> None:
        text = table if isinstance(table, str) else yaml.safe_dump(table)
        tmp = self.table_path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.table_path)  # atomic, like a ConfigMap volume update

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as response:
            return response.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` that carry ``labels`` (0 when there are none)."""
        total = 0.0
        for line in self.metrics().splitlines():
            sample, _, value = line.rpartition(" ")
            if sample.split("{")[0] != name:
                continue
            if all(f'{k}="{v}"' in sample for k, v in labels.items()):
                total += float(value)
        return total


def route(name: str = "iris", model: str = "iris", **extra) -> dict:
    return {"name": name, "model": model, **extra}


def variant(name: str, *upstreams: Upstream | str, weight: float = 0, **extra) -> dict:
    urls = [u.url if isinstance(u, Upstream) else u for u in upstreams]
    return {"name": name, "upstreams": urls, "weight": weight, **extra}


def table(*routes: dict) -> dict:
    return {"routes": list(routes)}
