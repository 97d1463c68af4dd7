"""An operator killed between its writes never moves traffic backwards: the candidate's weight in the
route table only grows during a promotion, whatever write the operator dies after."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from mlrollouts.controller.config import OperatorConfig
from mlrollouts.controller.kube import KubeError
from mlrollouts.controller.modeldeployment import ModelDeploymentController
from mlrollouts.controller.resource import ResourceState, run_pass
from mlserving.router.table import ROUTES_CONFIGMAP_KEY, RouteTable
from support.fake_kube import FakeKube

T0 = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)
CONFIG = OperatorConfig(prometheus_url=None, poll=1.0)
NS = "ml"
ROUTES = "iris-routes"


class CrashAfterRouteWrite(FakeKube):
    """Every time the route table changes, the operator dies before its next status write: that
    write fails and the process (its memory included) is replaced by a fresh one."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[dict[str, float]] = []
        self.crash_pending = False
        self.crashes = 0

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        applied = await super().apply(obj)
        if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == ROUTES:
            table = RouteTable.from_yaml(obj["data"][ROUTES_CONFIGMAP_KEY])
            weights = {v.name: v.weight for r in table.routes for v in r.variants}
            if not self.tables or self.tables[-1] != weights:
                self.tables.append(weights)
                self.crash_pending = True
        return applied

    async def merge_patch(self, *args: Any, subresource: str | None = None, **kwargs: Any) -> Any:
        if subresource == "status" and self.crash_pending:
            self.crash_pending = False
            self.crashes += 1
            raise KubeError(503, "operator killed before this write")
        return await super().merge_patch(*args, subresource=subresource, **kwargs)


def canary(uri: str) -> dict:
    steps = [
        {"weight": 30, "duration": "2s"},
        {"weight": 50, "duration": "2s"},
        {"weight": 80, "duration": "2s"},
    ]
    return {
        "apiVersion": "mlrollouts.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "iris", "namespace": NS, "uid": "uid-iris", "generation": 1},
        "spec": {
            "model": {"uri": uri},
            "serving": {"replicas": 1},
            "rollout": {"strategy": "Canary", "steps": steps},
        },
    }


def run_until_healthy(
    fake: CrashAfterRouteWrite, now: datetime, stable: str | None
) -> tuple[str | None, datetime]:
    """Passes until a new revision is the Healthy stable one; ``None`` if that never happens."""
    controller, process = ModelDeploymentController(), ResourceState()
    for _ in range(120):
        fake.make_ready()
        body = copy.deepcopy(fake.object("ModelDeployment", NS, "iris"))
        try:
            asyncio.run(run_pass(controller, body, fake, CONFIG, process, now=now))
        except KubeError:
            process = ResourceState()  # a new operator process
        now += timedelta(seconds=1)
        status = fake.object("ModelDeployment", NS, "iris").get("status") or {}
        if status.get("phase") == "Healthy" and status.get("stableRevision") not in (None, stable):
            return status["stableRevision"], now
    return None, now


def test_a_kill_after_each_route_write_never_moves_the_weights_backwards():
    fake = CrashAfterRouteWrite()
    fake.put(canary("file:///models/iris-v1.skops"))
    v1, now = run_until_healthy(fake, T0, None)
    assert v1 is not None
    first_tables = len(fake.tables)

    body = fake.object("ModelDeployment", NS, "iris")
    body["spec"]["model"]["uri"] = "file:///models/iris-v2.skops"
    body["metadata"]["generation"] += 1
    v2, _ = run_until_healthy(fake, now, v1)
    v2 = v2 or fake.object("ModelDeployment", NS, "iris")["status"]["candidateRevision"]

    candidate_weights = [table.get(v2, 0.0) for table in fake.tables[first_tables:]]
    assert fake.crashes >= 4, fake.crashes  # one kill after each step's route write
    assert candidate_weights == sorted(candidate_weights), fake.tables[first_tables:]
    assert [w for w in candidate_weights if w] == [30, 50, 80, 100, 100], fake.tables[first_tables:]
