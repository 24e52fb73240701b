"""The OPC UA source: one session per ``run()``, everything re-resolved on every (re)start.

``run(ctx)``:

1. prepares certificates (generated once into ``ctx.state_dir/pki``) and secrets;
2. opens a new session (security policy/mode, user identity) — failures are translated to
   SourceUnavailable / SourceAuthError / SourceConfigError by :mod:`.client`;
3. reads the namespace array and resolves every tag's node id (``nsu=`` URIs may have moved to
   another index since the last session), and reads the server's OperationLimits;
4. creates the subscription and its monitored items (or registers the nodes for polling);
5. runs, in one task group: the acquisition (emitter or poller), the bad-node retry and a watchdog
   that reads Server_ServerStatus_State every ``watchdog_interval`` and checks the publish stream.

Any failure closes the session, reports ``ctx.status.down`` and raises; the core's supervisor owns
backoff and calls ``run()`` again. The source logs once when the server goes down and once when it
is back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from ingestd.config.base import SourceConfig
from ingestd.errors import SourceError, SourceUnavailable
from ingestd.ports import SourceContext

from .client import OpcUaClient, status_name
from .config import OpcUaSourceConfig
from .health import TagHealth
from .plan import LIMIT_NODES, effective_limits, resolve_points
from .poll import Poller
from .settings import connect_settings
from .subscribe import SubscriptionRunner

__all__ = ["OpcUaSource"]

_SERVER_STATES = {0: "Running", 1: "Failed", 2: "NoConfiguration", 3: "Suspended", 4: "Shutdown", 5: "Test",
                  6: "CommunicationFault", 7: "Unknown"}


class OpcUaSource:
    """Factory target of the registry: ``OpcUaSource(config)``; the core calls :meth:`run`."""

    def __init__(self, config: SourceConfig) -> None:
        if not isinstance(config, OpcUaSourceConfig):
            raise TypeError(f"expected OpcUaSourceConfig, got {type(config).__name__}")
        self.config = config
        self.health = TagHealth(status_name, config.bad_node_retry)
        self._up: bool | None = None
        self._refs = [(i, t.node) for i, t in enumerate(config.tags)]

    async def run(self, ctx: SourceContext) -> None:
        cfg = self.config
        try:
            settings = await asyncio.to_thread(connect_settings, cfg.name, cfg.endpoint, cfg.security, cfg.auth,
                                               ctx.state_dir, timeouts=cfg, log=ctx.log)
            client = await OpcUaClient.connect(settings)
        except SourceError as exc:
            self._down(ctx, exc)
            raise
        try:
            acquisition, stale = await self._setup(ctx, client)
            self._came_up(ctx)
            await _run_all([*acquisition, ("watchdog", lambda: self._watchdog(ctx, client, stale))])
        except SourceError as exc:
            self._down(ctx, exc)
            raise
        finally:
            await client.close()

    async def _setup(self, ctx: SourceContext, client: OpcUaClient) -> tuple[
            list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]], Callable[[], str | None]]:
        cfg = self.config
        namespaces = await client.namespace_array()
        limits = effective_limits(await client.operation_limits(LIMIT_NODES), cfg.limits)
        ctx.log.debug("OPC UA source %r: namespaces %s, limits %s", cfg.name, namespaces, limits)
        resolution = resolve_points(self._refs, namespaces)
        if cfg.mode == "subscription":
            sub = SubscriptionRunner(ctx, cfg, client, limits, self.health)
            await sub.setup(self._refs, resolution)
            return [("emit", sub.emit_loop), ("retry", sub.retry_loop)], sub.stale_reason
        poller = Poller(ctx, cfg, client, limits, self.health)
        await poller.setup(self._refs, resolution)
        return [("poll", poller.poll_loop), ("retry", poller.retry_loop)], lambda: None

    async def _watchdog(self, ctx: SourceContext, client: OpcUaClient, stale: Callable[[], str | None]) -> None:
        """Detect a dead session: transport loss (immediate), a silent publish stream, or a status
        probe that fails, times out, or reports a state other than Running."""
        cfg = self.config
        loop = asyncio.get_running_loop()
        while True:
            try:
                async with asyncio.timeout(cfg.watchdog_interval):
                    await client.lost.wait()
            except TimeoutError:
                pass
            if client.lost.is_set():
                raise SourceUnavailable(f"OPC UA source {cfg.name!r}: {client.lost_reason}")
            reason = stale()
            if reason is not None:
                raise SourceUnavailable(f"OPC UA source {cfg.name!r}: {reason}")
            t0 = loop.time()
            try:
                async with asyncio.timeout(cfg.request_timeout):
                    state = await client.server_state()
            except TimeoutError:
                raise SourceUnavailable(f"OPC UA source {cfg.name!r}: server status probe timed out") from None
            ctx.metrics.observe("status_probe", loop.time() - t0)
            if state != 0:
                raise SourceUnavailable(
                    f"OPC UA source {cfg.name!r}: server state is {_SERVER_STATES.get(state, state)}")

    def _down(self, ctx: SourceContext, exc: SourceError) -> None:
        # The core logs the transition once per outage (the supervisor creates a new source object for
        # every attempt, so logging here would repeat on each reconnect attempt).
        ctx.status.down(str(exc))
        self._up = False

    def _came_up(self, ctx: SourceContext) -> None:
        ctx.status.up()
        if self._up is False:
            ctx.log.info("OPC UA source %r: connected again to %s", self.config.name, self.config.endpoint)
        elif self._up is None:
            ctx.log.info("OPC UA source %r: connected to %s (%s mode, %d tags)", self.config.name,
                         self.config.endpoint, self.config.mode, len(self.config.tags))
        self._up = True


async def _run_all(jobs: list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]]) -> None:
    """Run the jobs in one task group until one fails; re-raise that failure itself (not a group)."""
    try:
        async with asyncio.TaskGroup() as tg:
            for name, job in jobs:
                tg.create_task(job(), name=name)
    except BaseExceptionGroup as group:
        source_errors, rest = group.split(SourceError)
        if source_errors is not None and rest is None:
            raise _first(source_errors) from None
        raise


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc
