"""MQTT JSON: every tick, one QoS 1 message per well on ``demo/wells/<well>`` with all its values.

A well in a comm fault publishes nothing (the broker keeps no retained value: silence is the signal).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiomqtt
import orjson

from ingestd.sim.layout import MQTT_TOPIC, well_name

from .field import Field

__all__ = ["MqttJsonPublisher"]

log = logging.getLogger(__name__)


class MqttJsonPublisher:
    def __init__(self, field: Field, wells: list[int], host: str, port: int) -> None:
        self.field = field
        self.wells = wells
        self.host, self.port = host, port
        self._client: aiomqtt.Client | None = None
        self._stack = contextlib.AsyncExitStack()

    async def start(self) -> None:
        client = aiomqtt.Client(self.host, self.port, identifier="demo-field-json", timeout=3)
        self._client = await self._stack.enter_async_context(client)

    async def update(self, ts_ms: int) -> None:
        if self._client is None:
            await self.start()
        assert self._client is not None
        try:
            for w in self.wells:
                if not self.field.faulted(w):
                    payload = orjson.dumps({"ts": ts_ms, "values": self.field.values(w)})
                    await self._client.publish(MQTT_TOPIC.format(well=well_name(w)), payload, qos=1)
        except aiomqtt.MqttError as exc:
            log.warning("MQTT JSON publisher: %s; reconnecting next tick", exc)
            await self.stop()

    async def stop(self) -> None:
        self._client = None
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
            await asyncio.wait_for(self._stack.aclose(), 3)  # a vanished broker must not hold up the stop
        self._stack = contextlib.AsyncExitStack()
