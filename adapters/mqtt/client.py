"""The only module of this adapter that imports aiomqtt/paho: connection, TLS, session, manual acks.

Foreign exceptions are translated here: connection problems → SourceUnavailable, rejected
credentials → SourceAuthError. Messages leave this module as plain :class:`InMessage` tuples.

Manual acknowledgement: with ``ack = "after_commit"`` the PUBACK of a QoS 1 message is sent only
after its readings are committed or spooled (paho's ``manual_ack_set``; aiomqtt has no public API
for it, so :meth:`MqttClient.ack` reaches the underlying paho client). The broker redelivers
anything not acknowledged when the session resumes; acks are sent in receive order
(MQTT 3.1.1 §4.6 / 5.0 §4.6) by :class:`AckTracker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ingestd.config.types import SecretUnavailable
from ingestd.errors import SourceAuthError, SourceConfigError, SourceUnavailable

from .config import MqttConnection

__all__ = ["AckTracker", "InMessage", "MqttClient", "Will"]

log = logging.getLogger(__name__)

# CONNACK codes meaning "your credentials are wrong / you are not allowed" (3.1.1 and 5.0)
_AUTH_CODES: Final = {4, 5, 134, 135, 140}


@dataclass(frozen=True, slots=True)
class InMessage:
    topic: str
    payload: bytes
    qos: int
    mid: int
    retain: bool


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


def _tls_context(conn: MqttConnection) -> ssl.SSLContext | None:
    t = conn.tls
    if t is None:
        return None
    try:
        ctx = ssl.create_default_context(cafile=t.ca_file)
        if t.verify != "full":
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if t.cert_file and t.key_file:
            pw = t.key_password.reveal() if t.key_password else None
            ctx.load_cert_chain(t.cert_file, t.key_file, password=pw)
    except (OSError, ssl.SSLError, SecretUnavailable) as exc:
        raise SourceConfigError(f"TLS setup failed: {exc}") from None
    return ctx


class AckTracker:
    """Acknowledges QoS 1 messages in receive order once each is durable."""

    def __init__(self, client: MqttClient) -> None:
        self._client = client
        self._queue: deque[list[Any]] = deque()  # [mid, qos, done]
        self.closed = False

    def track(self, msg: InMessage) -> list[Any]:
        entry = [msg.mid, msg.qos, False]
        self._queue.append(entry)
        return entry

    def done(self, entry: list[Any]) -> None:
        entry[2] = True
        while self._queue and self._queue[0][2]:
            mid, qos, _ = self._queue.popleft()
            if not self.closed:
                self._client.ack(mid, qos)

    @property
    def pending(self) -> int:
        return len(self._queue)


class MqttClient:
    def __init__(
        self,
        conn: MqttConnection,
        client_id: str,
        *,
        manual_ack: bool,
        clean_start: bool = False,
        will: Will | None = None,
        max_queued: int | None = None,
    ) -> None:
        self._conn = conn
        self._client_id = client_id
        self._manual_ack = manual_ack
        self._clean_start = clean_start
        self._will = will
        self._max_queued = max_queued
        self._client: aiomqtt.Client | None = None

    def _build(self) -> aiomqtt.Client:
        c = self._conn
        v5 = c.version == "5"
        props = None
        if v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 0 if self._clean_start else int(c.session_expiry)
            props.ReceiveMaximum = c.receive_maximum
        try:
            password = c.password.reveal() if c.password is not None else None
        except SecretUnavailable as exc:
            raise SourceConfigError(f"MQTT password unavailable: {exc}") from None
        will = None
        if self._will is not None:
            will = aiomqtt.Will(self._will.topic, self._will.payload, self._will.qos, self._will.retain)
        client = aiomqtt.Client(
            c.host,
            c.port,
            username=c.username,
            password=password,
            identifier=self._client_id,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            clean_session=None if v5 else self._clean_start,
            clean_start=self._clean_start if v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
            transport=c.transport,
            keepalive=c.keepalive,
            timeout=c.connect_timeout,
            properties=props,
            tls_context=_tls_context(c),
            will=will,
            max_queued_incoming_messages=self._max_queued,
            logger=log,
        )
        if self._manual_ack:
            client._client.manual_ack_set(True)
        return client

    async def __aenter__(self) -> MqttClient:
        client = self._build()
        try:
            async with asyncio.timeout(self._conn.connect_timeout):
                await client.__aenter__()
        except aiomqtt.MqttCodeError as exc:
            code = getattr(exc.rc, "value", exc.rc)
            if code in _AUTH_CODES:
                raise SourceAuthError(f"broker {self._conn.host}:{self._conn.port} rejected the credentials "
                                      f"({exc})") from None
            raise SourceUnavailable(f"broker {self._conn.host}:{self._conn.port} refused the connection: {exc}") \
                from exc
        except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
            raise SourceUnavailable(f"cannot connect to broker {self._conn.host}:{self._conn.port}: "
                                    f"{exc or type(exc).__name__}") from exc
        self._client = client
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(aiomqtt.MqttError, OSError, TimeoutError):
                async with asyncio.timeout(5):
                    await client.__aexit__(et, e, tb)

    @property
    def raw(self) -> aiomqtt.Client:
        if self._client is None:
            raise SourceUnavailable("MQTT client is not connected")
        return self._client

    async def subscribe(self, filters: list[tuple[str, int]]) -> None:
        try:
            for flt, qos in filters:
                result = await self.raw.subscribe(flt, qos=qos)
                codes = [getattr(r, "value", r) for r in (result or [])]
                if any(isinstance(c, int) and c >= 0x80 for c in codes):
                    raise SourceConfigError(f"broker refused subscription {flt!r} (reason {codes})")
        except aiomqtt.MqttError as exc:
            raise SourceUnavailable(f"subscribe failed: {exc}") from exc

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        try:
            await self.raw.publish(topic, payload, qos=qos, retain=retain)
        except aiomqtt.MqttError as exc:
            raise SourceUnavailable(f"publish to {topic!r} failed: {exc}") from exc

    def ack(self, mid: int, qos: int) -> None:
        if self._client is not None and qos > 0:
            self._client._client.ack(mid, qos)

    async def messages(self, max_batch: int = 1000) -> AsyncIterator[list[InMessage]]:
        """Yield lists of messages: everything already queued (up to ``max_batch``) per iteration."""
        client = self.raw
        it = client.messages
        try:
            while True:
                first = await it.__anext__()
                batch = [self._convert(first)]
                while len(batch) < max_batch and len(it) > 0:
                    batch.append(self._convert(await it.__anext__()))
                yield batch
        except aiomqtt.MqttError as exc:
            raise SourceUnavailable(f"connection to broker {self._conn.host}:{self._conn.port} lost: {exc}") \
                from exc

    @staticmethod
    def _convert(m: aiomqtt.Message) -> InMessage:
        payload = m.payload if isinstance(m.payload, bytes | bytearray) else str(m.payload).encode()
        return InMessage(m.topic.value, bytes(payload), m.qos, m.mid, m.retain)
