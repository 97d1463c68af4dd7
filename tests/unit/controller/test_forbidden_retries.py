"""While a request stays forbidden (403), each retry writes the status its decision needs first, then
meets the 403 again. ``Degraded`` must stay True with the time it turned True, not flap to False
and back at every retry; once the right is granted the next pass clears it."""

from __future__ import annotations

from typing import Any

from test_faults_action_once import NAME, NS, FailOnce, at_held_step

from mlrollouts.controller.kube import KubeError
from mlrollouts.core.names import ACTION_ANNOTATION


class ForbidsRoutes(FailOnce):
    """Forbids every write of the route table while ``forbidding``; records each status patch."""

    def __init__(self) -> None:
        super().__init__()
        self.forbidding = False
        self.forbidden = 0
        self.status_patches: list[dict[str, Any]] = []

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        if self.forbidding and obj["kind"] == "ConfigMap" and obj["metadata"]["name"].endswith("-routes"):
            self.forbidden += 1
            raise KubeError(403, 'configmaps "iris-routes" is forbidden', call="apply of ConfigMap")
        return await super().apply(obj)

    async def merge_patch(self, api_version, kind, namespace, name, patch, subresource=None) -> Any:
        if subresource == "status":
            self.status_patches.append(patch["status"])
        return await super().merge_patch(api_version, kind, namespace, name, patch, subresource)


def degraded(status: dict[str, Any]) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c["type"] == "Degraded"), None)


def test_degraded_holds_its_transition_time_through_the_retries_of_a_forbidden_write() -> None:
    fake = ForbidsRoutes()
    _, operator = at_held_step(fake)
    fake.forbidding = True
    fake.object("ModelDeployment", NS, NAME)["metadata"]["annotations"] = {ACTION_ANNOTATION: "promote"}
    fake.status_patches.clear()
    for _ in range(3):  # the promote's weights need the route table: every pass meets the 403
        operator.tick(seconds=15)
    # a new decision while forbidden: its status is written before the route table is tried again
    fake.object("ModelDeployment", NS, NAME)["metadata"]["annotations"][ACTION_ANNOTATION] = "promote-full"
    for _ in range(3):
        operator.tick(seconds=15)
    written = [d for d in map(degraded, fake.status_patches) if d is not None]
    first = next(i for i, d in enumerate(written) if d["status"] == "True")  # the first 403
    written = written[first:]
    assert written[0]["reason"] == "Forbidden", written
    assert fake.forbidden >= 4  # every pass retried the route table and met the 403
    assert {d["status"] for d in written} == {"True"}, written  # never False between two retries
    assert {d["lastTransitionTime"] for d in written} == {written[0]["lastTransitionTime"]}, written
    assert operator.events.count("Forbidden") == 1, operator.events

    fake.forbidding = False  # the right is granted
    operator.until(lambda s: s.get("phase") == "Healthy" and not s.get("candidateRevision"))
    assert degraded(operator.body()["status"])["status"] == "False"
    assert operator.events.count("PromotionRequested") == 2, operator.events
