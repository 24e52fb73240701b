"""Unit tests without a server: certificates, error translation, password redaction, the notification
buffer, and the polling schedule (with a stub client)."""

from __future__ import annotations

import asyncio
import logging
import stat
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua

from adapters.opcua.certs import CERT_NAME, KEY_NAME, application_uri_of, ensure_client_certificate
from adapters.opcua.client import NotificationBuffer, status_name, translate
from adapters.opcua.config import OpcUaSourceConfig
from adapters.opcua.decode import RawSamples
from adapters.opcua.health import TagHealth
from adapters.opcua.nodeid import NodeId
from adapters.opcua.plan import Resolution, effective_limits
from adapters.opcua.poll import Poller
from adapters.opcua.subscribe import SubscriptionRunner
from ingestd.errors import SourceAuthError, SourceConfigError, SourceUnavailable
from ingestd.testing import RecordingContext

# --- certificates ---------------------------------------------------------------------------------


def test_certificate_is_generated_once_and_reused(tmp_path: Path) -> None:
    first = ensure_client_certificate(tmp_path / "pki", "urn:host:ingestd:plc1")
    assert first.created
    assert application_uri_of(first.cert) == "urn:host:ingestd:plc1"
    assert stat.S_IMODE(first.key.stat().st_mode) == 0o600
    cert, key = first.cert.read_bytes(), first.key.read_bytes()
    again = ensure_client_certificate(tmp_path / "pki", "urn:other:uri")
    assert not again.created
    assert (again.cert.read_bytes(), again.key.read_bytes()) == (cert, key)
    assert again.application_uri == "urn:host:ingestd:plc1"  # the certificate's own URI wins


def test_lost_certificate_is_reissued_for_the_same_key(tmp_path: Path) -> None:
    first = ensure_client_certificate(tmp_path, "urn:a")
    key = first.key.read_bytes()
    first.cert.unlink()
    again = ensure_client_certificate(tmp_path, "urn:a")
    assert again.created
    assert again.key.read_bytes() == key


def test_certificate_without_key_is_an_error(tmp_path: Path) -> None:
    ensure_client_certificate(tmp_path, "urn:a")
    (tmp_path / KEY_NAME).unlink()
    with pytest.raises(FileNotFoundError, match="private key"):
        ensure_client_certificate(tmp_path, "urn:a")
    assert (tmp_path / CERT_NAME).exists()  # never replaced silently


# --- error translation ----------------------------------------------------------------------------


@pytest.mark.parametrize(("exc", "kind", "text"), [
    (ua.UaStatusCodeError(ua.StatusCodes.BadUserAccessDenied), SourceAuthError, "BadUserAccessDenied"),
    (ua.UaStatusCodeError(ua.StatusCodes.BadIdentityTokenRejected), SourceAuthError, "user identity"),
    (ua.UaStatusCodeError(ua.StatusCodes.BadCertificateUntrusted), SourceAuthError, "certificate"),
    (ua.UaStatusCodeError(ua.StatusCodes.BadSecurityChecksFailed), SourceAuthError, "certificate"),
    (ua.UaStatusCodeError(ua.StatusCodes.BadTooManySessions), SourceUnavailable, "BadTooManySessions"),
    (ConnectionRefusedError(111, "Connection refused"), SourceUnavailable, "Connection refused"),
    (TimeoutError(), SourceUnavailable, "timed out"),
    (ua.UaError("No matching endpoints: 3, http://x"), SourceConfigError, "no endpoint"),
    (ua.UaError("Server certificate mismatch"), SourceAuthError, "server_cert"),
])
def test_translate(exc: BaseException, kind: type[Exception], text: str) -> None:
    out = translate(exc, "OPC UA source 'p'")
    assert type(out) is kind
    assert text in str(out)


def test_status_name() -> None:
    assert status_name(0x8034_0000) == "BadNodeIdUnknown (0x80340000)"


def test_passwords_in_asyncua_debug_logs_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    token = ua.UserNameIdentityToken(UserName="u", Password=b"top-secret-pw")
    caplog.set_level(logging.DEBUG, logger="asyncua.client.ua_client.UASocketProtocol")
    logging.getLogger("asyncua.client.ua_client.UASocketProtocol").debug("Sending: %s", token)
    assert "top-secret-pw" not in caplog.text
    assert "Password=<redacted>" in caplog.text


# --- notification buffer --------------------------------------------------------------------------


def _publish(items: list[tuple[int, float]], status: int | None = None) -> Any:
    data: list[Any] = [ua.DataChangeNotification(MonitoredItems=[
        ua.MonitoredItemNotification(ClientHandle=h, Value=ua.DataValue(ua.Variant(v))) for h, v in items])]
    if status is not None:
        data.append(ua.StatusChangeNotification(Status=ua.StatusCode(status)))
    return ua.PublishResult(NotificationMessage=ua.NotificationMessage(NotificationData=data))


async def test_buffer_drains_everything_since_the_last_turn_and_caps_its_size() -> None:
    buf = NotificationBuffer(max_items=4)
    buf(_publish([(0, 1.0), (1, 2.0)]))
    buf(_publish([(2, 3.0)]))
    assert buf.ready.is_set()
    raw = buf.drain()
    assert (raw.key, raw.value) == ([0, 1, 2], [1.0, 2.0, 3.0])
    assert not buf.ready.is_set()
    buf(_publish([(i, float(i)) for i in range(6)]))
    assert buf.dropped == 2
    assert buf.drain().key == [2, 3, 4, 5]  # the oldest were dropped (and counted)
    buf(ua.PublishResult())  # keep-alive: no data, still proof of life
    assert not buf.ready.is_set()
    buf(_publish([], status=ua.StatusCodes.BadTimeout))
    assert buf.status_error == ua.StatusCodes.BadTimeout


# --- polling schedule -----------------------------------------------------------------------------


class _SlowClient:
    """Answers every read after ``delay`` seconds with one GOOD value per key."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.starts: list[float] = []

    async def read(self, plan: Any) -> RawSamples:
        self.starts.append(asyncio.get_running_loop().time())
        await asyncio.sleep(self.delay)
        n = len(plan.keys)
        return RawSamples(list(plan.keys), [1.0] * n, [0] * n, [0] * n, [0] * n)

    async def register_nodes(self, nodes: list[Any]) -> list[Any]:
        return list(nodes)


async def _poll(interval: float, delay: float, polls: int) -> tuple[_SlowClient, RecordingContext]:
    cfg = OpcUaSourceConfig.model_validate({
        "name": "p", "protocol": "opcua", "endpoint": "opc.tcp://h:4840", "mode": "polling",
        "polling": {"interval": interval}, "tags": [{"name": "a", "node_id": "ns=1;i=1"}],
    })
    ctx = RecordingContext.for_source(cfg)
    client = _SlowClient(delay)
    poller = Poller(ctx, cfg, client, effective_limits({}, cfg.limits), TagHealth(status_name, 60))  # type: ignore[arg-type]
    await poller.setup([(0, cfg.tags[0].node)], _resolution())
    task = asyncio.create_task(poller.poll_loop())
    try:
        await ctx.wait_for(lambda c: c.rec.events.get("poll", 0) >= polls)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return client, ctx


def _resolution() -> Resolution:
    return Resolution([(0, NodeId(1, "i", 1))], [])


async def test_poll_schedule_does_not_drift() -> None:
    """Ticks are due at start + k × interval: a read taking half the interval must not stretch the
    period (a sleep-after-read loop would run at 1.5 × interval)."""
    client, _ = await _poll(interval=0.1, delay=0.05, polls=10)
    starts = client.starts[:10]
    period = (starts[-1] - starts[0]) / (len(starts) - 1)
    assert 0.095 <= period < 0.125, period


async def test_poll_overrun_skips_missed_ticks_and_counts_them() -> None:
    """Reads of 0.25 s at a 0.1 s interval: polls stay on the 0.1 s grid (0, 0.3, 0.6, ...) instead of
    bursting to catch up (0, 0.25, 0.5, ...), and the skipped ticks are counted."""
    client, ctx = await _poll(interval=0.1, delay=0.25, polls=4)
    assert ctx.rec.events["overrun"] >= 4
    offsets = [(t - client.starts[0]) / 0.1 for t in client.starts[:4]]
    assert all(abs(o - round(o)) < 0.3 for o in offsets), offsets
    assert [round(o) for o in offsets] == [0, 3, 6, 9]


def test_many_rejected_nodes_do_not_flood_the_log(caplog: pytest.LogCaptureFixture) -> None:
    cfg = OpcUaSourceConfig.model_validate({
        "name": "p", "protocol": "opcua", "endpoint": "opc.tcp://h:4840",
        "tags": [{"name": f"t{i}", "node_id": f"ns=1;i={i}"} for i in range(25)],
    })
    ctx = RecordingContext.for_source(cfg)
    health = TagHealth(status_name, 60)
    caplog.set_level(logging.WARNING)
    batch = health.node_bad(ctx, [(i, 0x8034_0000, f"ns=1;i={i}") for i in range(25)])
    assert batch is not None
    assert len(batch) == 25
    assert len(caplog.records) == 11  # 10 lines, then one summary
    assert "15 more tags rejected" in caplog.records[-1].getMessage()
    assert health.node_bad(ctx, [(0, 0x8034_0000, "")]) is None  # unchanged: nothing new
    again = health.node_bad(ctx, [(0, 0x8034_0000, "")], emit="all")  # new session: report again
    assert again is not None
    assert len(caplog.records) == 11
    assert ctx.rec.events["bad_node"] == 25


async def test_backpressure_overflow_is_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    cfg = OpcUaSourceConfig.model_validate({
        "name": "p", "protocol": "opcua", "endpoint": "opc.tcp://h:4840", "subscription": {"max_buffered": 1000},
        "tags": [{"name": f"t{i}", "node_id": f"ns=1;i={i}"} for i in range(10)],
    })
    ctx = RecordingContext.for_source(cfg)
    gate, blocked = asyncio.Event(), asyncio.Event()
    emitted: list[int] = []
    record = ctx.emit

    async def slow_emit(batch: Any) -> None:
        blocked.set()
        await gate.wait()  # the pipeline's inbox is full
        emitted.append(len(batch))
        await record(batch)

    ctx.emit = slow_emit
    runner = SubscriptionRunner(ctx, cfg, None, effective_limits({}, cfg.limits), TagHealth(status_name, 60))  # type: ignore[arg-type]
    caplog.set_level(logging.INFO)
    task = asyncio.create_task(runner.emit_loop())
    try:
        runner.buffer(_publish([(0, 1.0)]))
        await asyncio.wait_for(blocked.wait(), 5)  # the emitter took the first batch and is stuck in emit
        for k in range(3):  # 3 × 600 notifications while blocked: 1,800 > 1,000
            runner.buffer(_publish([(i % 10, float(k)) for i in range(600)]))
        gate.set()
        await ctx.wait_for(lambda c: sum(emitted) == 1 + 1000)
        runner.buffer(_publish([(1, 5.0)]))  # flowing again
        await ctx.wait_for(lambda c: sum(emitted) == 1002)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert ctx.rec.events["buffer_overflow"] == 800
    assert len([r for r in caplog.records if "buffer full" in r.getMessage()]) == 1
    assert any("recovered" in r.getMessage() for r in caplog.records)


def test_asyncua_publish_traceback_on_connection_loss_is_not_duplicated(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("asyncua.client.ua_session.UaSession")
    for exc in (ConnectionError("Connection is closed"), RuntimeError("a real bug")):
        try:
            raise exc
        except Exception:
            logger.exception("Publish iteration crashed; retrying in 1s")
    assert [r.exc_info[1].__class__ for r in caplog.records if r.exc_info] == [RuntimeError]
