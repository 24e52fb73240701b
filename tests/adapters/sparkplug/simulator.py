"""A Sparkplug B edge node for tests, talking to a real broker (aiomqtt + the adapter's codec).

* ``connect()`` sets the Will (NDEATH with this session's ``bdSeq``), subscribes to its NCMD/DCMD
  topics and listens for commands; ``birth()`` publishes NBIRTH (``bdSeq``, ``Node Control/Rebirth``,
  every metric with name + alias + datatype + value, seq 0) and one DBIRTH per device;
* ``data()`` publishes NDATA/DDATA carrying aliases only, with the next seq (``gap`` skips seqs);
* a ``Node Control/Rebirth`` command is answered by re-sending the births with the same ``bdSeq``
  (unless ``answer_rebirth`` is false); ``rebirths`` counts the requests;
* ``die()`` publishes NDEATH and disconnects; ``crash()`` drops the TCP connection so that the
  broker delivers the Will; ``reconnect()`` starts a new session with ``bdSeq + 1``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

import aiomqtt

from adapters.sparkplug.codec import REBIRTH_METRIC, decode, encode
from adapters.sparkplug.payload import DataType, Metric, Payload

from .support import raw_field

__all__ = ["EdgeNode", "MetricSpec"]


@dataclass
class MetricSpec:
    datatype: int
    value: Any
    alias: int = 0


def now_ms() -> int:
    return int(time.time() * 1000)


class EdgeNode:
    def __init__(self, port: int, group: str, node: str, *, metrics: dict[str, tuple[int, Any]] | None = None,
                 devices: dict[str, dict[str, tuple[int, Any]]] | None = None, bd_seq: int = 0,
                 answer_rebirth: bool = True) -> None:
        self.port = port
        self.group = group
        self.node = node
        self.bd_seq = bd_seq
        self.answer_rebirth = answer_rebirth
        alias = iter(range(1, 10_000))
        self.metrics = {n: MetricSpec(dt, v, next(alias)) for n, (dt, v) in (metrics or {}).items()}
        self.devices = {d: {n: MetricSpec(dt, v, next(alias)) for n, (dt, v) in ms.items()}
                        for d, ms in (devices or {}).items()}
        self.seq = 0
        self.rebirths = 0
        self.commands: list[Payload] = []
        self.changed = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._listener: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ topics
    def topic(self, kind: str, device: str = "") -> str:
        return f"spBv1.0/{self.group}/{kind}/{self.node}" + (f"/{device}" if device else "")

    def _bd_metric(self) -> Metric:
        return Metric(name="bdSeq", datatype=DataType.INT64, value_field="long_value", value=self.bd_seq)

    def _death(self) -> bytes:
        return encode(Payload(timestamp=now_ms(), metrics=(self._bd_metric(),)))

    # ------------------------------------------------------------------ session
    async def connect(self) -> None:
        will = aiomqtt.Will(self.topic("NDEATH"), self._death(), qos=1, retain=False)
        client = aiomqtt.Client("127.0.0.1", self.port, identifier=f"edge-{self.node}-{uuid.uuid4().hex[:6]}",
                                will=will, protocol=aiomqtt.ProtocolVersion.V5)
        await client.__aenter__()
        self._client = client
        await client.subscribe(f"spBv1.0/{self.group}/NCMD/{self.node}", qos=1)
        await client.subscribe(f"spBv1.0/{self.group}/DCMD/{self.node}/+", qos=1)
        self._listener = asyncio.create_task(self._listen(client), name=f"edge:{self.node}")

    async def reconnect(self, *, birth: bool = True) -> None:
        """A new session: bdSeq + 1 (and a fresh Will)."""
        await self.close()
        self.bd_seq = (self.bd_seq + 1) % 256
        await self.connect()
        if birth:
            await self.birth()

    async def _listen(self, client: aiomqtt.Client) -> None:
        with contextlib.suppress(aiomqtt.MqttError):
            async for msg in client.messages:
                payload = decode(bytes(msg.payload))  # type: ignore[arg-type,unused-ignore]
                self.commands.append(payload)
                rebirth = payload.metric(REBIRTH_METRIC)
                if rebirth is not None and rebirth.value is True:
                    self.rebirths += 1
                    if self.answer_rebirth:
                        await self.birth()
                self.changed.set()

    async def wait_rebirths(self, n: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while self.rebirths < n:
                self.changed.clear()
                await self.changed.wait()

    # ------------------------------------------------------------------ messages
    def _next_seq(self, gap: int = 0) -> int:
        self.seq = (self.seq + gap) % 256
        seq, self.seq = self.seq, (self.seq + 1) % 256
        return seq

    async def publish(self, kind: str, payload: Payload | bytes, device: str = "", qos: int = 0) -> None:
        assert self._client is not None, "not connected"
        data = payload if isinstance(payload, bytes) else encode(payload)
        await self._client.publish(self.topic(kind, device), data, qos=qos)

    @staticmethod
    def _birth_metric(name: str, spec: MetricSpec, ts: int) -> Metric:
        fld, raw = raw_field(spec.datatype, spec.value)
        return Metric(name=name, alias=spec.alias, timestamp=ts, datatype=spec.datatype, value_field=fld, value=raw,
                      is_null=spec.value is None)

    async def birth(self) -> None:
        """NBIRTH (seq 0) and every DBIRTH, with the current values."""
        ts = now_ms()
        self.seq = 0
        rebirth = Metric(name=REBIRTH_METRIC, datatype=DataType.BOOLEAN, value_field="boolean_value", value=False)
        metrics = (self._bd_metric(), rebirth, *(self._birth_metric(n, s, ts) for n, s in self.metrics.items()))
        await self.publish("NBIRTH", Payload(timestamp=ts, metrics=metrics, seq=self._next_seq()))
        for device in self.devices:
            await self.dbirth(device)

    async def dbirth(self, device: str) -> None:
        ts = now_ms()
        metrics = tuple(self._birth_metric(n, s, ts) for n, s in self.devices[device].items())
        await self.publish("DBIRTH", Payload(timestamp=ts, metrics=metrics, seq=self._next_seq()), device)

    async def data(self, values: dict[str, Any], device: str = "", *, gap: int = 0, ts: int | None = None,
                   is_historical: bool = False, is_transient: bool = False) -> int:
        """NDATA/DDATA with aliases only (no names, no datatypes); returns the seq used."""
        specs = self.devices[device] if device else self.metrics
        ts = ts if ts is not None else now_ms()
        metrics = []
        for name, value in values.items():
            spec = specs[name]
            spec.value = value
            fld, raw = raw_field(spec.datatype, value)
            metrics.append(Metric(alias=spec.alias, timestamp=ts, value_field=fld, value=raw, is_null=value is None,
                                  is_historical=is_historical, is_transient=is_transient))
        seq = self._next_seq(gap)
        await self.publish("DDATA" if device else "NDATA", Payload(timestamp=ts, metrics=tuple(metrics), seq=seq),
                           device)
        return seq

    async def ddeath(self, device: str) -> None:
        await self.publish("DDEATH", Payload(timestamp=now_ms(), seq=self._next_seq()), device)

    async def stale_death(self, bd_seq: int) -> None:
        """An NDEATH of an older session (as a broker may deliver a late Will)."""
        m = Metric(name="bdSeq", datatype=DataType.INT64, value_field="long_value", value=bd_seq)
        await self.publish("NDEATH", Payload(timestamp=now_ms(), metrics=(m,)), qos=1)

    async def die(self) -> None:
        """Orderly death: NDEATH then DISCONNECT (which suppresses the Will)."""
        await self.publish("NDEATH", self._death(), qos=1)
        await self.close()

    async def crash(self) -> None:
        """Drop the TCP connection without DISCONNECT: the broker publishes the Will (NDEATH)."""
        assert self._client is not None
        sock = self._client._client.socket()
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_RDWR)
        if self._listener is not None:
            await asyncio.wait_for(asyncio.shield(self._listener), 10)
        await self.close()

    async def close(self) -> None:
        client, self._client = self._client, None
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        if client is not None:
            with contextlib.suppress(aiomqtt.MqttError, OSError, TimeoutError):
                await client.__aexit__(None, None, None)

    async def __aenter__(self) -> EdgeNode:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
