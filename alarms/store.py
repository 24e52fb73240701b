"""SQL of the alarm engine (tables from ``schema/020_alarms.sql``): the only alarms module touching asyncpg.

Everything takes an open asyncpg connection from :class:`ingestd.storage.pool.TenantDb` (whose context
manager turns connection failures into :class:`~ingestd.errors.StorageUnavailable`). Times cross this
boundary as integer µs since the epoch; JSON goes through orjson (NaN/±inf become ``null``, which jsonb
requires).

:func:`write` is *the* transaction of the engine: state rows, journal rows and outbox rows of a batch of
state-machine outcomes commit together or not at all, so the outbox holds a notification iff the journal
holds its transition. Journal and outbox inserts are idempotent (``UNIQUE (alarm_id, seq)``), so a
transaction retried after an ambiguous failure (commit sent, answer lost) cannot duplicate anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import asyncpg
import orjson

from .model import JournalEvent, NotificationIntent

__all__ = [
    "Mark",
    "OutboxRow",
    "StateRow",
    "fetch_pending",
    "journal_events",
    "journal_heads",
    "journal_page",
    "load_states",
    "mark",
    "outbox_depth",
    "tables_ready",
    "write",
]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_US: Final = timedelta(microseconds=1)


def to_dt(t_us: int | None) -> datetime | None:
    return None if t_us is None else _EPOCH + timedelta(microseconds=t_us)


def to_us(dt: datetime | None) -> int | None:
    return None if dt is None else (dt - _EPOCH) // _US


def _json(v: Any) -> str:
    return orjson.dumps(v).decode()


def _load(v: Any) -> Any:
    if v is None:
        return None
    return orjson.loads(v) if isinstance(v, str | bytes) else v


@dataclass(frozen=True, slots=True)
class StateRow:
    """One ``alarm_state`` row."""

    alarm_id: str
    rule: str
    kind: str
    subject: str
    source: str | None
    record: dict[str, Any]
    eval_state: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""
    next_due: int | None = None


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    alarm_id: str
    seq: int
    intent: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Mark:
    """Final status of one outbox row, applied by ``(alarm_id, seq)`` (the row may not exist yet when the
    card went out while the database was down)."""

    alarm_id: str
    seq: int
    status: str
    route: str | None = None
    attempts: int = 0
    detail: str = ""
    delivery_key: str | None = None
    at: int | None = None

    @property
    def key(self) -> tuple[str, int]:
        return self.alarm_id, self.seq


async def tables_ready(conn: asyncpg.Connection) -> bool:
    """Whether the tenant database is migrated far enough for the alarm engine."""
    return bool(await conn.fetchval("SELECT to_regclass('notification_outbox') IS NOT NULL"))


async def load_states(conn: asyncpg.Connection) -> list[StateRow]:
    rows = await conn.fetch(
        "SELECT alarm_id, rule, kind, subject, source, record, eval_state, fingerprint, next_due FROM alarm_state")
    return [StateRow(r["alarm_id"], r["rule"], r["kind"], r["subject"], r["source"], _load(r["record"]),
                     _load(r["eval_state"]) or {}, r["fingerprint"], to_us(r["next_due"])) for r in rows]


async def journal_heads(conn: asyncpg.Connection) -> dict[str, int]:
    """Highest journal sequence number per alarm (compared with ``alarm_state`` at start-up)."""
    rows = await conn.fetch("SELECT alarm_id, max(seq) AS seq FROM alarm_journal GROUP BY alarm_id")
    return {r["alarm_id"]: int(r["seq"]) for r in rows}


_STATE_SQL: Final = """
INSERT INTO alarm_state (alarm_id, rule, kind, subject, source, state, display_state, priority, event_id, record,
                         eval_state, fingerprint, next_due, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11::jsonb, $12, $13, now())
ON CONFLICT (alarm_id) DO UPDATE SET
    rule = EXCLUDED.rule, kind = EXCLUDED.kind, subject = EXCLUDED.subject, source = EXCLUDED.source,
    state = EXCLUDED.state, display_state = EXCLUDED.display_state, priority = EXCLUDED.priority,
    event_id = EXCLUDED.event_id, record = EXCLUDED.record, eval_state = EXCLUDED.eval_state,
    fingerprint = EXCLUDED.fingerprint, next_due = EXCLUDED.next_due, updated_at = now()
"""

_JOURNAL_SQL: Final = """
INSERT INTO alarm_journal (alarm_id, seq, at, kind, from_state, to_state, event_id, occurrence, priority, level,
                           value, "limit", username, comment, reason, annunciated, changes)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17::jsonb)
ON CONFLICT (alarm_id, seq) DO NOTHING
"""

_OUTBOX_SQL: Final = """
INSERT INTO notification_outbox (alarm_id, seq, dedup_key, kind, intent)
VALUES ($1, $2, $3, $4, $5::jsonb)
ON CONFLICT (alarm_id, seq) DO NOTHING
"""


def _state_args(s: StateRow) -> tuple[Any, ...]:
    rec = s.record
    display = rec.get("state", "NORMAL")
    if rec.get("disabled"):
        display = "DISABLED"
    elif rec.get("oos"):
        display = "OUT_OF_SERVICE"
    elif rec.get("shelve"):
        display = "SHELVED"
    elif rec.get("sbd_groups") or rec.get("sbd_grace_until") is not None:
        display = "SUPPRESSED_BY_DESIGN"
    return (s.alarm_id, s.rule, s.kind, s.subject, s.source, rec.get("state", "NORMAL"), display,
            rec.get("priority"), rec.get("event_id"), _json(rec), _json(s.eval_state), s.fingerprint,
            to_dt(s.next_due))


def _journal_args(e: JournalEvent) -> tuple[Any, ...]:
    return (e.alarm_id, e.seq, to_dt(e.at), e.kind.value, e.from_state.value, e.to_state.value, e.event_id,
            e.occurrence, e.priority.value if e.priority else None, e.level.value if e.level else None,
            e.value, e.limit, e.user, e.comment, e.reason, e.annunciated, _json(dict(e.changes)))


async def write(conn: asyncpg.Connection, states: Sequence[StateRow], events: Sequence[JournalEvent],
                intents: Sequence[NotificationIntent]) -> None:
    """One transaction: upsert ``states``, append ``events`` (in order) and ``intents`` to the outbox."""
    async with conn.transaction():
        if events:
            await conn.executemany(_JOURNAL_SQL, [_journal_args(e) for e in events])
        if intents:
            await conn.executemany(_OUTBOX_SQL, [(i.alarm_id, i.seq, i.dedup_key, i.kind.value,
                                                  _json(i.to_dict())) for i in intents])
        if states:
            await conn.executemany(_STATE_SQL, [_state_args(s) for s in states])


async def fetch_pending(conn: asyncpg.Connection, after_id: int, limit: int = 500) -> list[OutboxRow]:
    rows = await conn.fetch(
        "SELECT id, alarm_id, seq, intent FROM notification_outbox WHERE status = 'pending' AND id > $1 "
        "ORDER BY id LIMIT $2", after_id, limit)
    return [OutboxRow(int(r["id"]), r["alarm_id"], int(r["seq"]), _load(r["intent"])) for r in rows]


async def mark(conn: asyncpg.Connection, marks: Sequence[Mark]) -> set[tuple[str, int]]:
    """Set the final status of outbox rows still pending; returns the keys of the rows it found (a mark
    whose row is not written yet is retried by the caller). Rows already final are reported as found."""
    if not marks:
        return set()
    rows = await conn.fetch(
        """UPDATE notification_outbox o SET status = m.status, route = m.route, attempts = o.attempts + m.attempts,
                  detail = m.detail, delivery_key = m.delivery_key, sent_at = m.at
           FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::int[], $6::text[], $7::text[],
                       $8::timestamptz[]) AS m(alarm_id, seq, status, route, attempts, detail, delivery_key, at)
           WHERE o.alarm_id = m.alarm_id AND o.seq = m.seq AND o.status = 'pending'
           RETURNING o.alarm_id, o.seq""",
        [m.alarm_id for m in marks], [m.seq for m in marks], [m.status for m in marks], [m.route for m in marks],
        [m.attempts for m in marks], [m.detail[:500] for m in marks], [m.delivery_key for m in marks],
        [to_dt(m.at) for m in marks])
    found = {(r["alarm_id"], int(r["seq"])) for r in rows}
    missing = [m for m in marks if m.key not in found]
    if missing:
        final = await conn.fetch(
            "SELECT o.alarm_id, o.seq FROM notification_outbox o JOIN unnest($1::text[], $2::int[]) AS m(alarm_id, seq)"
            " ON o.alarm_id = m.alarm_id AND o.seq = m.seq", [m.alarm_id for m in missing], [m.seq for m in missing])
        found |= {(r["alarm_id"], int(r["seq"])) for r in final}
    return found


async def outbox_depth(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM notification_outbox WHERE status = 'pending'"))


def _event(r: Any, tenant: str) -> JournalEvent:
    return JournalEvent.from_dict({
        "alarm_id": r["alarm_id"], "tenant": tenant, "seq": r["seq"], "at": to_us(r["at"]), "kind": r["kind"],
        "from_state": r["from_state"], "to_state": r["to_state"], "event_id": r["event_id"],
        "occurrence": r["occurrence"], "priority": r["priority"], "level": r["level"], "value": r["value"],
        "limit": r["limit"], "user": r["username"], "comment": r["comment"], "reason": r["reason"],
        "annunciated": r["annunciated"], "changes": _load(r["changes"]) or {},
    })


_COLS: Final = ('id, alarm_id, seq, at, kind, from_state, to_state, event_id, occurrence, priority, level, value, '
                '"limit", username, comment, reason, annunciated, changes')


async def journal_events(conn: asyncpg.Connection, tenant: str, *, alarm_ids: Iterable[str] | None = None,
                         start_us: int | None = None, end_us: int | None = None,
                         kinds: Iterable[str] | None = None) -> list[JournalEvent]:
    """Journal rows in per-alarm sequence order (replay), optionally restricted."""
    where: list[str] = []
    args: list[Any] = []
    if alarm_ids is not None:
        args.append(list(alarm_ids))
        where.append(f"alarm_id = ANY(${len(args)}::text[])")
    if start_us is not None:
        args.append(to_dt(start_us))
        where.append(f"at >= ${len(args)}")
    if end_us is not None:
        args.append(to_dt(end_us))
        where.append(f"at < ${len(args)}")
    if kinds is not None:
        args.append(list(kinds))
        where.append(f"kind = ANY(${len(args)}::text[])")
    sql = f"SELECT {_COLS} FROM alarm_journal"
    if where:
        sql += " WHERE " + " AND ".join(where)
    rows = await conn.fetch(sql + " ORDER BY alarm_id, seq", *args)
    return [_event(r, tenant) for r in rows]


async def journal_page(conn: asyncpg.Connection, tenant: str, *, alarm_id: str | None, start_us: int, end_us: int,
                       limit: int, before_id: int | None) -> tuple[list[JournalEvent], int | None]:
    """Newest first within [start, end); keyset pagination on the row id. Returns (events, next before_id)."""
    args: list[Any] = [to_dt(start_us), to_dt(end_us), limit + 1]
    sql = f"SELECT {_COLS} FROM alarm_journal WHERE at >= $1 AND at < $2"
    if alarm_id is not None:
        args.append(alarm_id)
        sql += f" AND alarm_id = ${len(args)}"
    if before_id is not None:
        args.append(before_id)
        sql += f" AND id < ${len(args)}"
    rows = await conn.fetch(sql + " ORDER BY id DESC LIMIT $3", *args)
    more = len(rows) > limit
    rows = rows[:limit]
    return [_event(r, tenant) for r in rows], (int(rows[-1]["id"]) if more and rows else None)
