"""The Sparkplug host source against a real Mosquitto broker and the edge-node simulator."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from adapters.sparkplug.config import SparkplugSourceConfig
from adapters.sparkplug.payload import DataType
from adapters.sparkplug.source import SparkplugSource
from ingestd.errors import SourceUnavailable
from ingestd.testing import RecordingContext
from tests.support.mosquitto import Mosquitto

from .proxy import TcpProxy
from .simulator import EdgeNode

DEVICE_METRICS: dict[str, tuple[int, Any]] = {
    "Temp": (DataType.INT32, -12), "Small": (DataType.INT8, -1), "On": (DataType.BOOLEAN, True),
    "Flow": (DataType.FLOAT, 1.5), "Mode": (DataType.STRING, "auto"),
}
NODE_METRICS: dict[str, tuple[int, Any]] = {"Uptime": (DataType.UINT64, 2**64 - 1)}


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def edge(port: int, group: str, node: str = "E1", **kw: Any) -> EdgeNode:
    return EdgeNode(port, group, node, metrics=dict(NODE_METRICS), devices={"D1": dict(DEVICE_METRICS)}, **kw)


def host_config(port: int, group: str, **extra: Any) -> SparkplugSourceConfig:
    return SparkplugSourceConfig.model_validate({
        "name": "spb", "protocol": "sparkplug", "host_id": unique("h-"), "groups": [group],
        "connection": {"host": "127.0.0.1", "port": port, "client_id": unique("host-")}, **extra,
    })


@contextlib.asynccontextmanager
async def running(cfg: SparkplugSourceConfig) -> AsyncIterator[tuple[RecordingContext, asyncio.Task[None]]]:
    ctx = RecordingContext.for_source(cfg)
    task = asyncio.create_task(SparkplugSource(cfg).run(ctx))
    await ctx.wait_for(lambda c: task.done() or any(e.kind == "up" and e.device == "" for e in c.rec.status))
    if task.done():
        task.result()
    try:
        yield ctx, task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, SourceUnavailable):
            await task


def status(ctx: RecordingContext, kind: str, device: str) -> list[Any]:
    return [e for e in ctx.rec.status if e.kind == kind and e.device == device]


def tag_value(ctx: RecordingContext, tag: str) -> list[float]:
    return ctx.values_by_tag().get(tag, [])


class Observer:
    """A plain MQTT client recording every message on some topics (retained ones included)."""

    def __init__(self, port: int, *topics: str) -> None:
        self.port = port
        self.topics = topics
        self.messages: list[tuple[str, bytes, bool]] = []
        self.changed = asyncio.Event()
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Observer:
        client = await self._stack.enter_async_context(
            aiomqtt.Client("127.0.0.1", self.port, identifier=unique("obs-")))
        for t in self.topics:
            await client.subscribe(t, qos=1)
        task = asyncio.create_task(self._read(client))
        self._stack.push_async_callback(self._stop, task)
        return self

    async def _read(self, client: aiomqtt.Client) -> None:
        async for m in client.messages:
            self.messages.append((m.topic.value, bytes(m.payload), m.retain))  # type: ignore[arg-type,unused-ignore]
            self.changed.set()

    @staticmethod
    async def _stop(task: asyncio.Task[None]) -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    def states(self) -> list[dict[str, Any]]:
        return [json.loads(p) for t, p, _ in self.messages if "/STATE/" in t]

    async def wait(self, predicate: Any, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate(self):
                self.changed.clear()
                await self.changed.wait()


async def wait_log(broker: Mosquitto, pattern: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while not re.search(pattern, broker.log_tail(1_000_000)):
        if time.monotonic() > deadline:
            raise AssertionError(f"{pattern!r} not in broker log:\n{broker.log_tail()}")
        await asyncio.sleep(0.02)  # polling an external process's log file
    return broker.log_tail(1_000_000)


# ---------------------------------------------------------------------------------------------- data path
async def test_births_and_alias_only_data_with_every_sign(mosquitto: Mosquitto) -> None:
    group = unique("g")
    async with running(host_config(mosquitto.port, group)) as (ctx, _), edge(mosquitto.port, group) as node:
        await node.birth()
        await ctx.wait_rows(5)  # Uptime + Temp, Small, On, Flow (Mode is a String)
        await node.data({"Temp": -13, "Small": -128, "On": False, "Flow": 2.5}, "D1")
        await node.data({"Uptime": 7})
        await ctx.wait_rows(10)
        assert ctx.values_by_tag() == {
            "E1.Uptime": [float(2**64 - 1), 7.0], "E1.D1.Temp": [-12.0, -13.0], "E1.D1.Small": [-1.0, -128.0],
            "E1.D1.On": [1.0, 0.0], "E1.D1.Flow": [1.5, 2.5],
        }
        assert status(ctx, "up", f"{group}/E1") and status(ctx, "up", f"{group}/E1/D1")
        assert [r[0] for r in ctx.rec.rejects] == ["non_numeric"]
        assert node.rebirths == 0


async def test_data_before_birth_gets_a_rebirth_that_the_node_answers(mosquitto: Mosquitto) -> None:
    group = unique("g")
    async with edge(mosquitto.port, group) as node:
        await node.birth()  # the host is not there yet: it misses the births
        async with running(host_config(mosquitto.port, group)) as (ctx, _):
            await node.data({"Temp": 5}, "D1")
            await node.wait_rebirths(1)
            await ctx.wait_for(lambda c: status(c, "up", f"{group}/E1/D1"))
            await node.data({"Temp": 6}, "D1")
            await ctx.wait_for(lambda c: 6.0 in tag_value(c, "E1.D1.Temp"))
            # the DDATA before the birth was dropped (undecodable aliases); 5 comes from the rebirth's DBIRTH
            assert tag_value(ctx, "E1.D1.Temp") == [5.0, 6.0]
            reasons = {r[0]: r[2] for r in ctx.rec.rejects}
            assert reasons.get("data_before_birth")  # dead-lettered with payload
            assert ctx.rec.events["rebirth_requested"] == 1


async def test_seq_gap_requests_rebirth_after_the_reorder_timeout(mosquitto: Mosquitto) -> None:
    group = unique("g")
    async with running(host_config(mosquitto.port, group, reorder_timeout="300ms")) as (ctx, _), \
            edge(mosquitto.port, group) as node:
        await node.birth()
        await ctx.wait_rows(5)
        await node.data({"Temp": 1}, "D1", gap=2)  # two messages lost
        await node.wait_rebirths(1)
        assert ctx.rec.events["seq_gap"] == 1
        await ctx.wait_for(lambda c: 1.0 in tag_value(c, "E1.D1.Temp"))  # held message stored at the timeout


async def test_out_of_order_within_the_timeout_is_reordered_without_rebirth(mosquitto: Mosquitto) -> None:
    group = unique("g")
    async with running(host_config(mosquitto.port, group, reorder_timeout="5s")) as (ctx, _), \
            edge(mosquitto.port, group) as node:
        await node.birth()
        await ctx.wait_rows(5)
        first, second = node.seq, (node.seq + 1) % 256
        from adapters.sparkplug.payload import Metric, Payload

        def ddata(seq: int, value: int) -> Payload:
            return Payload(timestamp=1_700_000_000_000 + seq, seq=seq, metrics=(
                Metric(alias=node.devices["D1"]["Temp"].alias, value_field="int_value", value=value),))

        await node.publish("DDATA", ddata(second, 22), "D1")
        await node.publish("DDATA", ddata(first, 11), "D1")
        await ctx.wait_for(lambda c: 22.0 in tag_value(c, "E1.D1.Temp"))
        assert tag_value(ctx, "E1.D1.Temp")[-2:] == [11.0, 22.0]
        assert node.rebirths == 0 and "seq_held" in ctx.rec.events


async def test_malformed_payload_is_dead_lettered_and_triggers_rebirth(mosquitto: Mosquitto) -> None:
    group = unique("g")
    async with running(host_config(mosquitto.port, group)) as (ctx, _), edge(mosquitto.port, group) as node:
        await node.birth()
        await ctx.wait_rows(5)
        await node.publish("NDATA", b"\xff\xff\xff")
        await node.wait_rebirths(1)
        assert ("bad_protobuf", b"\xff\xff\xff") in [(r[0], r[2]) for r in ctx.rec.rejects]


# ---------------------------------------------------------------------------------------------- deaths
async def test_deaths_mark_points_stale_and_stale_bdseq_is_ignored(mosquitto: Mosquitto) -> None:
    group = unique("g")
    async with running(host_config(mosquitto.port, group)) as (ctx, _), \
            edge(mosquitto.port, group, bd_seq=5) as node:
        await node.birth()
        await ctx.wait_rows(5)
        node_points = (ctx.dynamic[("t1", "E1.Uptime")],)
        dev_points = tuple(sorted(ctx.dynamic[("t1", f"E1.D1.{m}")] for m in ("Temp", "Small", "On", "Flow")))

        await node.stale_death(4)  # a late Will of an older session
        await ctx.wait_for(lambda c: c.rec.events.get("stale_death") == 1)
        assert not status(ctx, "down", f"{group}/E1")

        await node.ddeath("D1")
        await ctx.wait_for(lambda c: status(c, "down", f"{group}/E1/D1"))
        assert status(ctx, "down", f"{group}/E1/D1")[0].points == dev_points
        await node.dbirth("D1")
        await ctx.wait_for(lambda c: len(status(c, "up", f"{group}/E1/D1")) == 2)

        await node.crash()  # the broker publishes the Will: NDEATH with bdSeq 5
        await ctx.wait_for(lambda c: status(c, "down", f"{group}/E1"))
        (down,) = status(ctx, "down", f"{group}/E1")
        assert down.points == node_points and "bdSeq 5" in down.reason
        assert len(status(ctx, "down", f"{group}/E1/D1")) == 2

        await node.reconnect()  # new session, bdSeq 6
        await ctx.wait_for(lambda c: len(status(c, "up", f"{group}/E1")) == 2)
        await ctx.wait_for(lambda c: len(status(c, "up", f"{group}/E1/D1")) == 3)


async def test_orderly_death(mosquitto: Mosquitto) -> None:
    group = unique("g")
    async with running(host_config(mosquitto.port, group)) as (ctx, _), edge(mosquitto.port, group) as node:
        await node.birth()
        await ctx.wait_rows(5)
        await node.die()
        await ctx.wait_for(lambda c: status(c, "down", f"{group}/E1"))
        assert status(ctx, "down", f"{group}/E1/D1")


# ---------------------------------------------------------------------------------------------- STATE
async def test_state_order_of_operations_will_and_broker_loss(tmp_path: Path) -> None:
    broker = Mosquitto(extra="log_type all\n")
    broker.start()
    try:
        group = unique("g")
        async with TcpProxy(broker.port) as proxy:
            cfg = host_config(proxy.port, group)
            cid, topic = cfg.connection.client_id, f"spBv1.0/STATE/{cfg.host}"
            async with Observer(broker.port, topic) as obs, edge(broker.port, group) as node, \
                    running(cfg) as (ctx, task):
                await obs.wait(lambda o: o.states())
                log = await wait_log(broker, rf"Received PUBLISH from {cid} .*'{re.escape(topic)}'")
                # CONNECT with Clean Start, Will on the STATE topic (QoS 1, retained) ...
                assert re.search(rf"New client connected from .* as {cid} \(p5, c1, k30\)", log)
                assert re.search(r"Will message specified \(\d+ bytes\) \(r1, q1\)", log)
                # ... SUBSCRIBE to our STATE topic and the namespace BEFORE publishing the STATE birth
                sub = log.index(f"Received SUBSCRIBE from {cid}")
                pub = re.search(rf"Received PUBLISH from {cid} \(d0, q1, r1, m\d+, '{re.escape(topic)}'", log)
                assert pub is not None and sub < pub.start()
                assert f"\t{topic} (QoS 1)" in log[sub:pub.start()]
                assert f"\tspBv1.0/{group}/# (QoS 1)" in log[sub:pub.start()]
                (online,) = obs.states()
                assert online["online"] is True and isinstance(online["timestamp"], int)

                await node.birth()
                await ctx.wait_rows(5)
                proxy.sever()  # the host's TCP connection dies without DISCONNECT
                with pytest.raises(SourceUnavailable):
                    await asyncio.wait_for(task, 10)
                await obs.wait(lambda o: len(o.states()) == 2)
                assert obs.states()[1] == {"online": False, "timestamp": online["timestamp"]}  # the Will, same T
                # losing the broker makes everything from it stale
                assert status(ctx, "down", "") and status(ctx, "down", f"{group}/E1")
                assert status(ctx, "down", f"{group}/E1/D1")[0].points
    finally:
        broker.close()


async def test_own_offline_state_is_answered_with_online(mosquitto: Mosquitto) -> None:
    cfg = host_config(mosquitto.port, unique("g"))
    topic = f"spBv1.0/STATE/{cfg.host}"
    async with running(cfg) as (ctx, _), Observer(mosquitto.port, topic) as obs:
        await obs.wait(lambda o: o.states())
        t = obs.states()[0]["timestamp"]
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier=unique("x-")) as c:
            await c.publish(topic, json.dumps({"online": False, "timestamp": t + 1}), qos=1, retain=True)
        await obs.wait(lambda o: len(o.states()) >= 3)
        assert obs.states()[1]["online"] is False and obs.states()[2] == {"online": True, "timestamp": t}
        await ctx.wait_for(lambda c: c.rec.events.get("state_republished") == 1)
    async with Observer(mosquitto.port, topic) as late:  # the retained STATE is offline again after a clean stop
        await late.wait(lambda o: o.states())
        assert late.states()[-1] == {"online": False, "timestamp": t}


async def test_stale_retained_offline_state_from_a_previous_session(mosquitto: Mosquitto) -> None:
    cfg = host_config(mosquitto.port, unique("g"))
    topic = f"spBv1.0/STATE/{cfg.host}"
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier=unique("x-")) as c:
        await c.publish(topic, b'{"online":false,"timestamp":1}', qos=1, retain=True)
    async with running(cfg) as (ctx, _), Observer(mosquitto.port, topic) as obs:
        await ctx.wait_for(lambda c: c.rec.events.get("state_republished") == 1)
        await obs.wait(lambda o: o.states() and o.states()[-1]["online"] is True)
