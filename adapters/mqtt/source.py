"""MQTT JSON source: subscribe, decode, map topics to tenant/tag, emit batches, ack after commit."""

from __future__ import annotations

import socket
from typing import Any

from ingestd.errors import PayloadError, SourceUnavailable
from ingestd.model import Batch, BatchBuilder, Durability, now_us
from ingestd.ports import SourceContext

from .client import AckTracker, InMessage, MqttClient
from .config import MqttSourceConfig
from .decode import Decoder

__all__ = ["MqttSource"]


class MqttSource:
    def __init__(self, cfg: MqttSourceConfig) -> None:
        self.cfg = cfg
        self.decoders = [Decoder(s) for s in cfg.subscriptions]
        self._explicit = {t.name for t in cfg.tags}
        self._points: dict[tuple[str | None, str], int] = {}

    def client_id(self) -> str:
        if self.cfg.connection.client_id:
            return self.cfg.connection.client_id
        return f"ingestd-{self.cfg.name}-{socket.gethostname()}"[:64]

    async def run(self, ctx: SourceContext) -> None:
        cfg = self.cfg
        manual = cfg.connection.ack == "after_commit"
        client = MqttClient(cfg.connection, self.client_id(), manual_ack=manual,
                            max_queued=None if manual else cfg.max_queued)
        async with client:
            acks = AckTracker(client) if manual else None
            try:
                await client.subscribe([(s.mqtt_filter, s.qos) for s in cfg.subscriptions])
                ctx.status.up()
                ctx.log.info("subscribed to %s as %s", [s.mqtt_filter for s in cfg.subscriptions], self.client_id())
                async for messages in client.messages():
                    await self._handle(ctx, messages, acks)
            finally:
                if acks is not None:
                    acks.closed = True
        raise SourceUnavailable("broker closed the connection")

    async def _handle(self, ctx: SourceContext, messages: list[InMessage], acks: AckTracker | None) -> None:
        builder = BatchBuilder()
        tokens: list[Durability] = []
        recv = now_us()
        for msg in messages:
            entry = acks.track(msg) if acks is not None and msg.qos > 0 else None
            before = len(builder)
            self._decode(ctx, msg, recv, builder)
            if entry is not None:
                assert acks is not None
                if len(builder) > before:
                    tokens.append(Durability(lambda e=entry: acks.done(e)))  # type: ignore[misc]
                else:
                    acks.done(entry)  # nothing to store (rejected): nothing to wait for
        if len(builder) == 0:
            return
        batch: Batch = builder.build(recv)
        batch.tokens = tokens
        await ctx.emit(batch)

    def _decode(self, ctx: SourceContext, msg: InMessage, recv: int, builder: BatchBuilder) -> None:
        if len(msg.payload) > self.cfg.max_payload:
            ctx.reject("oversized", f"{len(msg.payload)} bytes > max_payload {self.cfg.max_payload}",
                       msg.payload[:1024], key=msg.topic)
            return
        levels = msg.topic.split("/")
        for dec in self.decoders:
            captures = dec.match(levels)
            if captures is None:
                continue
            try:
                samples, problems = dec.decode(captures, msg.payload, recv)
            except PayloadError as exc:
                ctx.reject(exc.reason, f"topic {msg.topic}: {exc.detail}", msg.payload, key=msg.topic)
                return
            for p in problems:
                ctx.reject(p.reason, f"topic {msg.topic}: {p.detail}", msg.payload, key=msg.topic)
            for tenant, tag, ts, value, quality in samples:
                point = self._point(ctx, tenant, tag, msg.topic)
                if point is not None:
                    builder.add(point, ts, value, quality)
            return
        ctx.reject("unknown_topic", f"topic {msg.topic} matches no subscription template", msg.payload,
                   key=msg.topic)

    def _point(self, ctx: SourceContext, tenant: str | None, tag: str, topic: str) -> int | None:
        key = (tenant, tag)
        point = self._points.get(key)
        if point is not None:
            return point
        if not self.cfg.auto_register and tag not in self._explicit:
            ctx.reject("unknown_tag", f"topic {topic}: tag {tag!r} is not configured (auto_register = false)",
                       key=tag)
            return None
        try:
            point = ctx.register_point(tenant, tag)
        except PayloadError as exc:
            ctx.reject(exc.reason, f"topic {topic}: {exc.detail}", key=f"{tenant}/{tag}")
            return None
        self._points[key] = point
        return point

    def describe(self) -> dict[str, Any]:
        return {"client_id": self.client_id(), "filters": [s.mqtt_filter for s in self.cfg.subscriptions]}
