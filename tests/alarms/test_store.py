"""alarms/store.py against real tenant databases (both storage tiers): the engine's single transaction is
idempotent, marks apply by (alarm_id, seq) even for rows written later, history pages newest first."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from alarms import state as sm
from alarms import store
from alarms.model import AlarmPolicy, AlarmRecord, Condition, Level, Operator
from alarms.replay import replay
from ingestd.config.model import PoolConfig, StorageConfig
from ingestd.config.types import Secret
from ingestd.storage.migrate import migrate
from ingestd.storage.pool import TenantDb as Pool
from tests.conftest import TenantDb

T0 = 1_767_225_600_000_000
POLICY = AlarmPolicy()


@pytest.fixture
async def conn(tenant_db: TenantDb) -> AsyncIterator[Any]:
    pool = Pool("acme", Secret(tenant_db.dsn), PoolConfig())
    async with pool.connection() as c:
        await migrate(c, StorageConfig())
        yield c
    await pool.close()


def outcomes() -> tuple[AlarmRecord, list[Any]]:
    rec = AlarmRecord("hi@w1.p", "acme")
    outs = []
    for out in (sm.on_condition(rec, Condition(True, T0, Level.HI, 101.5, 100.0), POLICY),):
        rec = out.record
        outs.append(out)
    out = sm.acknowledge(rec, Operator("jane", "ok"), POLICY, T0 + 1_000_000)
    outs.append(out)
    return out.record, outs


async def test_write_is_one_idempotent_transaction(conn: Any) -> None:
    rec, outs = outcomes()
    events = [e for o in outs for e in o.events]
    intents = [i for o in outs for i in o.intents]
    row = store.StateRow(rec.alarm_id, "hi", "limit", "w1.p", "rtu", rec.to_dict(), {"deb": {"HI": [True, None]}},
                         "fp1", T0 + 5_000_000)
    for _ in range(2):  # a retried transaction (answer lost) changes nothing
        await store.write(conn, [row], events, intents)
    loaded = await store.load_states(conn)
    assert loaded == [row]
    assert await store.journal_heads(conn) == {rec.alarm_id: 2}
    journal = await store.journal_events(conn, "acme")
    assert [e.kind.value for e in journal] == ["ACTIVATED", "ACKED"]
    assert replay(journal)[rec.alarm_id] == rec
    assert journal[1].user == "jane" and journal[1].comment == "ok" and journal[0].value == 101.5
    pending = await store.fetch_pending(conn, 0)
    assert [(p.alarm_id, p.seq, p.intent["kind"]) for p in pending] == [(rec.alarm_id, 1, "raise"),
                                                                        (rec.alarm_id, 2, "update")]
    assert await store.outbox_depth(conn) == 2


async def test_marks_apply_by_key_and_report_missing_rows(conn: Any) -> None:
    rec, outs = outcomes()
    intents = [i for o in outs for i in o.intents]
    early = store.Mark(rec.alarm_id, 1, "sent", "oncall", 2, "HTTP 202", "evt#1", T0)
    assert await store.mark(conn, [early]) == set(), "row not written yet (card sent while the DB was down)"
    await store.write(conn, [], [e for o in outs for e in o.events], intents)
    assert await store.mark(conn, [early]) == {(rec.alarm_id, 1)}
    assert await store.mark(conn, [early]) == {(rec.alarm_id, 1)}, "a final row counts as found"
    rows = await conn.fetch("SELECT seq, status, route, attempts FROM notification_outbox ORDER BY seq")
    assert [tuple(r) for r in rows] == [(1, "sent", "oncall", 2), (2, "pending", None, 0)]
    assert [p.seq for p in await store.fetch_pending(conn, 0)] == [2]


async def test_history_pages_newest_first(conn: Any) -> None:
    rec = AlarmRecord("hi@w1.p", "acme")
    events = []
    for i in range(7):
        out = sm.on_condition(rec, Condition(i % 2 == 0, T0 + i * 1_000_000, Level.HI, 1.0, 0.0), POLICY)
        rec = out.record
        events += out.events
    await store.write(conn, [], events, [])
    seen, before = [], None
    while True:
        page, before = await store.journal_page(conn, "acme", alarm_id=None, start_us=T0, end_us=T0 + 10**8,
                                                limit=3, before_id=before)
        seen += [e.seq for e in page]
        if before is None:
            break
    assert seen == [e.seq for e in reversed(events)] and len(seen) >= 7
