"""Sparkplug B host application source: STATE, subscriptions, decode, host state machine, emit.

Order of operations on every (re)connect (Sparkplug 3.0 §5, host application):

1. CONNECT with Clean Start = true, Session Expiry 0 and the Will ``spBv1.0/STATE/<host_id>`` =
   ``{"online":false,"timestamp":T}`` (QoS 1, retained);
2. SUBSCRIBE to ``spBv1.0/STATE/<host_id>`` and the namespace (``spBv1.0/#`` or one filter per group);
3. only then PUBLISH ``{"online":true,"timestamp":T}`` (same T) to the STATE topic, QoS 1, retained.

A STATE message on our own topic saying ``online: false`` (a stale retained Will, or another
process's) is answered at once by re-publishing ``online: true``. Losing the broker marks every
node, device and the source itself down (stale) and raises SourceUnavailable; the supervisor
reconnects with backoff and the edge nodes re-birth. On a clean stop (cancellation) the host
publishes ``online: false`` itself before disconnecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Final

from adapters.mqtt.client import InMessage, MqttClient, Will
from ingestd.errors import PayloadError, SourceUnavailable
from ingestd.model import BatchBuilder, now_us
from ingestd.ports import SourceContext

from .codec import decode, rebirth_command
from .config import SparkplugSourceConfig
from .host import Host, HostSettings, Output, Sample
from .mapping import PointMapper
from .topics import NAMESPACE, MsgType, ncmd_topic, parse_state, parse_topic, state_payload, state_topic

__all__ = ["SparkplugSource"]

_IDLE_TICK: Final = 1.0
"""Upper bound between two reorder-timeout checks when nothing is held (seconds)."""
_GOODBYE_TIMEOUT: Final = 2.0


@dataclass
class _Run:
    """Everything one connection needs."""

    ctx: SourceContext
    client: MqttClient
    host: Host
    online: bytes
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class SparkplugSource:
    def __init__(self, cfg: SparkplugSourceConfig) -> None:
        self.cfg = cfg
        self.host_id = cfg.host
        self.state_topic = state_topic(self.host_id)

    def client_id(self) -> str:
        if self.cfg.connection.client_id:
            return self.cfg.connection.client_id
        return f"ingestd-{self.cfg.name}-{socket.gethostname()}"[:64]

    def filters(self) -> list[str]:
        return [f"{NAMESPACE}/{g}/#" for g in self.cfg.groups] or [f"{NAMESPACE}/#"]

    def describe(self) -> dict[str, Any]:
        return {"client_id": self.client_id(), "host_id": self.host_id, "filters": self.filters()}

    async def run(self, ctx: SourceContext) -> None:
        cfg = self.cfg
        ts = int(time.time() * 1000)
        online, offline = state_payload(True, ts), state_payload(False, ts)
        client = MqttClient(cfg.connection, self.client_id(), manual_ack=False, clean_start=True,
                            will=Will(self.state_topic, offline, qos=1, retain=True), max_queued=cfg.max_queued)
        settings = HostSettings(reorder_timeout=cfg.reorder_timeout, rebirth_interval=cfg.rebirth_interval,
                                store_historical=cfg.historical == "store", exclude=tuple(cfg.exclude_metrics))
        run = _Run(ctx, client, Host(settings, PointMapper(cfg, ctx)), online)
        cause: SourceUnavailable | None = None
        async with client:
            ticker: asyncio.Task[None] | None = None
            try:
                await client.subscribe([(self.state_topic, 1), *((f, 1) for f in self.filters())])
                await client.publish(self.state_topic, online, qos=1, retain=True)
                ctx.status.up()
                ctx.log.info("Sparkplug host %s online as %s, subscribed to %s", self.host_id, self.client_id(),
                             self.filters())
                ticker = asyncio.create_task(self._ticker(run), name=f"sparkplug-tick:{cfg.name}")
                async for messages in client.messages():
                    await self._handle(run, messages)
                    if ticker.done():
                        ticker.result()  # re-raise what stopped it (a lost connection)
            except SourceUnavailable as exc:
                cause = exc
            except asyncio.CancelledError:
                await self._goodbye(client, offline)
                raise
            finally:
                if ticker is not None:
                    ticker.cancel()
                    with contextlib.suppress(asyncio.CancelledError, SourceUnavailable):
                        await ticker
        # The broker is gone: everything learnt from it is stale until the edge nodes re-birth.
        reason = f"Sparkplug host lost the broker: {cause or 'connection closed'}"
        for a in run.host.connection_lost(reason).status:
            ctx.status.down(a.reason, device=a.device, points=a.points)
        ctx.status.down(reason)
        raise SourceUnavailable(reason) from cause

    # ------------------------------------------------------------------ messages
    async def _handle(self, run: _Run, messages: list[InMessage]) -> None:
        recv, now = now_us(), time.monotonic()
        merged = Output()
        republish = False
        for msg in messages:
            out = self._one(run, msg, recv, now)
            if out is None:
                republish |= self._is_own_offline(msg)
                continue
            for p in out.problems:
                run.ctx.reject(p.reason, p.detail, msg.payload if p.with_payload else None, key=p.key)
            merged.actions.extend(out.actions)
            merged.rebirths.extend(out.rebirths)
            for k, n in out.events.items():
                merged.count(k, n)
        if republish:
            merged.count("state_republished")
            run.ctx.log.warning("Sparkplug host %s: saw its own STATE offline; re-publishing online", self.host_id)
            await run.client.publish(self.state_topic, run.online, qos=1, retain=True)
        await self._apply(run, merged, recv)
        if run.host.next_deadline() is not None:
            run.wake.set()

    def _one(self, run: _Run, msg: InMessage, recv: int, now: float) -> Output | None:
        ctx = run.ctx
        if len(msg.payload) > self.cfg.max_payload:
            ctx.reject("oversized", f"{len(msg.payload)} bytes > max_payload {self.cfg.max_payload}",
                       msg.payload[:1024], key=msg.topic)
            return None
        topic = parse_topic(msg.topic)
        if topic is None:
            ctx.reject("unknown_topic", f"topic {msg.topic} is not a Sparkplug B topic", msg.payload[:1024],
                       key=msg.topic)
            return None
        if topic.kind is MsgType.STATE:
            return None
        try:
            payload = decode(msg.payload)
        except PayloadError as exc:
            return run.host.malformed(topic, exc.detail, now)
        return run.host.handle(topic, payload, recv, now)

    def _is_own_offline(self, msg: InMessage) -> bool:
        if msg.topic != self.state_topic:
            return False
        state = parse_state(msg.payload)
        return state is not None and not state[0]

    async def _apply(self, run: _Run, out: Output, recv: int) -> None:
        """Emit samples and apply status changes in order; send rebirth requests; count events."""
        ctx = run.ctx
        live, hist = BatchBuilder(), BatchBuilder()
        for a in out.actions:
            if isinstance(a, Sample):
                (hist if a.historical else live).add(a.key, a.ts_us, a.value, a.quality, a.status)
                continue
            await self._emit(ctx, live, hist, recv)  # samples before a death must not clear its staleness
            if a.up:
                ctx.status.up(device=a.device)
            else:
                ctx.status.down(a.reason, device=a.device, points=a.points)
        await self._emit(ctx, live, hist, recv)
        for r in out.rebirths:
            ctx.log.info("Sparkplug host %s: requesting rebirth of %s/%s (%s)", self.host_id, r.group, r.node,
                         r.reason)
            await run.client.publish(ncmd_topic(r.group, r.node), rebirth_command(int(time.time() * 1000)), qos=0)
        for event, n in out.events.items():
            ctx.metrics.count(event, n)

    @staticmethod
    async def _emit(ctx: SourceContext, live: BatchBuilder, hist: BatchBuilder, recv: int) -> None:
        # Historical (store-and-forward) samples go in their own batch: see README "Historical".
        if len(live):
            await ctx.emit(live.build(recv))
        if len(hist):
            batch = hist.build(recv)
            batch.historical = True  # stored, but never "current": no live cache, alarm or deadband update
            await ctx.emit(batch)

    async def _ticker(self, run: _Run) -> None:
        """Expire reorder timeouts (held out-of-order messages) at their deadline."""
        while True:
            deadline = run.host.next_deadline()
            delay = _IDLE_TICK if deadline is None else max(0.0, deadline - time.monotonic())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(delay, _IDLE_TICK)):
                    await run.wake.wait()
            run.wake.clear()
            out = run.host.tick(time.monotonic())
            for p in out.problems:
                run.ctx.reject(p.reason, p.detail, None, key=p.key)
            if out.actions or out.rebirths or out.events:
                await self._apply(run, out, now_us())

    async def _goodbye(self, client: MqttClient, offline: bytes) -> None:
        """Clean stop: publish our own death certificate (a clean DISCONNECT suppresses the Will)."""
        with contextlib.suppress(SourceUnavailable, TimeoutError):
            async with asyncio.timeout(_GOODBYE_TIMEOUT):
                await client.publish(self.state_topic, offline, qos=1, retain=True)
