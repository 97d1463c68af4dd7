"""The graphs of a route table, ready for the router app: compiled graphs, metrics, event publishers.

``update`` is called with every new route table. Graphs are compiled again (cheap); an event
publisher survives a reload while its ``events`` spec is unchanged, so a table change neither loses
queued events nor restarts delivery. Replaced publishers drain in the background.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from prometheus_client import CollectorRegistry

from mlserving.http import Headers
from mlserving.router.graph.events import EventPublisher
from mlserving.router.graph.executor import Call, CompiledGraph, compile_graph, run_graph
from mlserving.router.graph.metrics import GraphMetrics
from mlserving.router.graph.model import ModelNode
from mlserving.router.table import RouteTable

log = logging.getLogger("mlserving.router.graph")


class GraphRuntime:
    """One per router: ``update(table)``, ``graph_for_model(model)``, ``infer(...)``, ``await close()``."""

    def __init__(self, call: Call, registry: CollectorRegistry | None = None) -> None:
        self.call = call
        self.metrics = GraphMetrics(registry) if registry is not None else None
        self._graphs: dict[str, CompiledGraph] = {}
        self._publishers: dict[str, EventPublisher] = {}
        self._retiring: set[asyncio.Task[None]] = set()

    def update(self, table: RouteTable) -> None:
        graphs: dict[str, CompiledGraph] = {}
        publishers: dict[str, EventPublisher] = {}
        for route in table.routes:
            if route.graph is None:
                continue
            events = route.graph.events
            publisher = None
            if events is not None:
                publisher = self._publishers.get(route.name)
                if publisher is None or publisher.spec != events:
                    publisher = EventPublisher(route.name, events, self.metrics)
                publishers[route.name] = publisher
            graphs[route.model] = compile_graph(route.graph, route.name, route.model, self.metrics, publisher)
        retired = [p for name, p in self._publishers.items() if publishers.get(name) is not p]
        self._graphs, self._publishers = graphs, publishers
        for publisher in retired:
            self._retire(publisher)

    def graph_for_model(self, model: str) -> CompiledGraph | None:
        return self._graphs.get(model)

    @property
    def publishers(self) -> dict[str, EventPublisher]:
        return dict(self._publishers)

    async def infer(
        self,
        graph: CompiledGraph,
        body: bytes | dict[str, Any],
        headers: Headers = (),
        response_id: str | None = None,
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        return await run_graph(graph, body, self.call, headers=headers, response_id=response_id)

    async def close(self) -> None:
        """Drain every publisher (each within its drainSeconds)."""
        publishers = list(self._publishers.values())
        self._publishers = {}
        await asyncio.gather(*(p.stop() for p in publishers), *self._retiring, return_exceptions=True)

    def _retire(self, publisher: EventPublisher) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # never started without a loop, so nothing is queued
            return
        task = loop.create_task(publisher.stop())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)


def graph_upstreams(table: RouteTable) -> list[str]:
    """Every component URL the table's graphs call (for an endpoint resolver to watch)."""
    return [
        node.upstream
        for route in table.routes
        if route.graph is not None
        for node in route.graph.nodes
        if isinstance(node, ModelNode)
    ]
