"""Sparkplug B: one edge node (``spBv1.0/demo/.../rtu_sparkplug``) with a device per well.

NBIRTH (``bdSeq``, ``Node Control/Rebirth``) then a DBIRTH per device with every metric's name, alias
and datatype; then DDATA by alias every tick, ``seq`` counting 0..255 over all messages of the node.
A rebirth request (NCMD ``Node Control/Rebirth``), or a host application announcing itself online on
its STATE topic, re-sends the births (so a host that starts later gets them); a well in a comm fault sends
DDEATH and, when it recovers, a new DBIRTH; the will message is the NDEATH of the current ``bdSeq``.

The payloads are built with the Sparkplug B protobuf schema shipped with the Sparkplug adapter
(``adapters/sparkplug/sparkplug_b_pb2``): the wire format is the specification's, not the adapter's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

import aiomqtt
from google.protobuf.message import DecodeError

from adapters.sparkplug import sparkplug_b_pb2 as pb
from ingestd.sim.layout import SPARKPLUG_GROUP, SPARKPLUG_NODE, TAGS, well_name

from .field import Field

__all__ = ["SparkplugEdgeNode"]

log = logging.getLogger(__name__)

_NS = "spBv1.0"
_INT64, _DOUBLE, _BOOLEAN = 4, 10, 11
_REBIRTH = "Node Control/Rebirth"


def _topic(kind: str, device: str | None = None) -> str:
    base = f"{_NS}/{SPARKPLUG_GROUP}/{kind}/{SPARKPLUG_NODE}"
    return f"{base}/{device}" if device else base


class SparkplugEdgeNode:
    def __init__(self, field: Field, wells: list[int], host: str, port: int) -> None:
        self.field = field
        self.wells = wells
        self.host, self.port = host, port
        self.bd_seq = 0
        self.seq = 0
        self._alias = {(w, tag): i * len(TAGS) + j + 1 for i, w in enumerate(wells) for j, tag in enumerate(TAGS)}
        self._dead: set[int] = set()
        self._client: aiomqtt.Client | None = None
        self._stack = contextlib.AsyncExitStack()
        self._listener: asyncio.Task[None] | None = None
        self._rebirth = asyncio.Event()

    def _payload(self, ts_ms: int) -> pb.Payload:
        p = pb.Payload()
        p.timestamp = ts_ms
        p.seq = self.seq
        self.seq = (self.seq + 1) % 256
        return p

    def _death(self) -> bytes:
        p = pb.Payload()
        p.timestamp = int(time.time() * 1000)
        m = p.metrics.add()
        m.name, m.datatype, m.long_value = "bdSeq", _INT64, self.bd_seq
        return p.SerializeToString()

    async def start(self) -> None:
        will = aiomqtt.Will(_topic("NDEATH"), self._death(), qos=1, retain=False)
        client = aiomqtt.Client(self.host, self.port, identifier=f"demo-{SPARKPLUG_NODE}", will=will,
                                clean_session=True, timeout=3)
        self._client = await self._stack.enter_async_context(client)
        await self._client.subscribe(_topic("NCMD"), qos=0)
        await self._client.subscribe(f"{_NS}/STATE/+", qos=1)
        self._listener = asyncio.create_task(self._commands(self._client))
        await self._births(int(time.time() * 1000))

    async def _commands(self, client: aiomqtt.Client) -> None:
        with contextlib.suppress(aiomqtt.MqttError):
            async for msg in client.messages:
                payload = bytes(msg.payload) if isinstance(msg.payload, bytes | bytearray) else b""
                if msg.topic.matches(f"{_NS}/STATE/+"):
                    with contextlib.suppress(ValueError):
                        state = json.loads(payload)
                        if isinstance(state, dict) and state.get("online") is True:
                            self._rebirth.set()
                    continue
                with contextlib.suppress(DecodeError):
                    cmd = pb.Payload.FromString(payload)
                    if any(m.name == _REBIRTH and m.boolean_value for m in cmd.metrics):
                        self._rebirth.set()

    async def _births(self, ts_ms: int) -> None:
        assert self._client is not None
        self.seq = 0
        p = self._payload(ts_ms)
        for name, dtype, value in (("bdSeq", _INT64, self.bd_seq), (_REBIRTH, _BOOLEAN, False)):
            m = p.metrics.add()
            m.name, m.datatype, m.timestamp = name, dtype, ts_ms
            if dtype == _INT64:
                m.long_value = int(value)
            else:
                m.boolean_value = bool(value)
        await self._client.publish(_topic("NBIRTH"), p.SerializeToString(), qos=0)
        self._dead.clear()
        for w in self.wells:
            if self.field.faulted(w):
                self._dead.add(w)
            else:
                await self._device(w, "DBIRTH", ts_ms)

    async def _device(self, w: int, kind: str, ts_ms: int) -> None:
        assert self._client is not None
        p = self._payload(ts_ms)
        if kind != "DDEATH":
            values = self.field.values(w)
            for tag in TAGS:
                m = p.metrics.add()
                if kind == "DBIRTH":
                    m.name = tag
                m.alias, m.timestamp = self._alias[(w, tag)], ts_ms
                if tag == "pump_running":
                    m.datatype, m.boolean_value = _BOOLEAN, bool(values[tag])
                else:
                    m.datatype, m.double_value = _DOUBLE, float(values[tag])
        await self._client.publish(_topic(kind, well_name(w)), p.SerializeToString(), qos=0)

    async def update(self, ts_ms: int) -> None:
        try:
            if self._client is None:
                await self.start()
            if self._rebirth.is_set():
                self._rebirth.clear()
                await self._births(ts_ms)
            for w in self.wells:
                faulted = self.field.faulted(w)
                if faulted and w not in self._dead:
                    self._dead.add(w)
                    await self._device(w, "DDEATH", ts_ms)
                elif not faulted and w in self._dead:
                    self._dead.discard(w)
                    await self._device(w, "DBIRTH", ts_ms)
                elif not faulted:
                    await self._device(w, "DDATA", ts_ms)
        except aiomqtt.MqttError as exc:
            log.warning("Sparkplug edge node: %s; reconnecting next tick", exc)
            await self._close()
            self.bd_seq = (self.bd_seq + 1) % 256

    async def _close(self) -> None:
        self._client = None
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
            self._listener = None
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
            await asyncio.wait_for(self._stack.aclose(), 3)  # a vanished broker must not hold up the stop
        self._stack = contextlib.AsyncExitStack()

    async def stop(self) -> None:
        """A clean disconnect sends no will: publish the NDEATH ourselves (Sparkplug 3.0)."""
        if self._client is not None:
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                await asyncio.wait_for(self._client.publish(_topic("NDEATH"), self._death(), qos=1), 2)
        await self._close()
