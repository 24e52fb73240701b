"""Readings, tags and outage windows in one tenant database (the write side of the storage layer).

Write path of one batch (one transaction)::

    INSERT INTO ingest_batches ... ON CONFLICT DO NOTHING RETURNING seq   -- idempotency
    COPY readings FROM STDIN (FORMAT binary)                               -- fast path

If the COPY hits a duplicate (tag_id, ts) — e.g. an MQTT message redelivered after a crash — the
transaction is retried through a temporary staging table with ``ON CONFLICT DO NOTHING``.
On plain PostgreSQL a missing partition is created and the write retried.
"""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
import numpy as np
import numpy.typing as npt

from ..errors import StorageSchemaError
from ..model import Batch
from .copy import COPY_COLUMNS, PG_EPOCH_US, encode_readings
from .migrate import Tier
from .partitions import ensure_partitions

__all__ = [
    "DeadLetter",
    "Outage",
    "TagRow",
    "WriteResult",
    "close_outage",
    "open_outage",
    "upsert_tags",
    "write_dead_letters",
    "write_readings",
]

log = logging.getLogger(__name__)

_UNIQUE_VIOLATION = "23505"
_STAMP = "UPDATE ingest_batches SET committed_at = clock_timestamp() WHERE seq = $1"
_NO_PARTITION = "23514"


@dataclass(frozen=True, slots=True)
class WriteResult:
    inserted: int
    duplicates: int
    already_committed: bool = False


@dataclass(frozen=True, slots=True)
class TagRow:
    name: str
    source: str = ""
    unit: str = ""
    data_type: str = "float"
    description: str = ""


@dataclass(frozen=True, slots=True)
class Outage:
    source: str
    device: str
    at_us: int
    down: bool
    reason: str = ""
    instance: str = ""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    at_us: int
    source: str
    reason: str
    detail: str
    payload: bytes | None


def _ts(us: int) -> object:
    import datetime as dt

    return dt.datetime.fromtimestamp(us / 1e6, dt.UTC)


async def upsert_tags(conn: asyncpg.Connection, rows: Sequence[TagRow], *, update_meta: bool = True) -> dict[str, int]:
    """Create missing tags (and refresh metadata of configured ones); return name → tag_id."""
    if not rows:
        return {}
    names = [r.name for r in rows]
    set_clause = (
        "source = EXCLUDED.source, unit = EXCLUDED.unit, data_type = EXCLUDED.data_type, "
        "description = EXCLUDED.description, updated_at = now() "
        "WHERE (tags.source, tags.unit, tags.data_type, tags.description) IS DISTINCT FROM "
        "(EXCLUDED.source, EXCLUDED.unit, EXCLUDED.data_type, EXCLUDED.description)"
    ) if update_meta else None
    sql = (
        "INSERT INTO tags (name, source, unit, data_type, description) "
        "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) "
        + (f"ON CONFLICT (name) DO UPDATE SET {set_clause}" if set_clause else "ON CONFLICT (name) DO NOTHING")
    )
    await conn.execute(sql, names, [r.source for r in rows], [r.unit for r in rows],
                       [r.data_type for r in rows], [r.description for r in rows])
    found = await conn.fetch("SELECT name, tag_id FROM tags WHERE name = ANY($1::text[])", names)
    return {r["name"]: r["tag_id"] for r in found}


async def write_readings(
    conn: asyncpg.Connection,
    tier: Tier,
    batch_key: uuid.UUID,
    source: str,
    tag_ids: npt.NDArray[np.int32],
    batch: Batch,
) -> WriteResult:
    """Write one batch exactly once. ``tag_ids`` are database tag ids aligned with ``batch`` rows."""
    n = len(batch)
    if n == 0:
        return WriteResult(0, 0)
    lo, hi = int(batch.ts.min()), int(batch.ts.max())
    for attempt in range(3):
        try:
            return await _write_once(conn, batch_key, source, tag_ids, batch, lo, hi, staged=attempt > 0)
        except asyncpg.PostgresError as exc:
            state = getattr(exc, "sqlstate", "")
            if state == _UNIQUE_VIOLATION and attempt == 0:
                continue  # duplicate rows: retry through the staging table
            if state == _NO_PARTITION and tier is Tier.POSTGRES and attempt < 2:
                created = await ensure_partitions(conn, lo, hi)
                log.info("created partitions %s for a batch spanning %s..%s", created, _ts(lo), _ts(hi))
                continue
            if state in ("42P01", "42703"):
                raise StorageSchemaError(f"readings table missing or outdated ({exc}); run `ingestd migrate`") from exc
            raise
    raise StorageSchemaError("could not write batch after creating partitions")


async def _write_once(
    conn: asyncpg.Connection, batch_key: uuid.UUID, source: str, tag_ids: npt.NDArray[np.int32],
    batch: Batch, lo: int, hi: int, *, staged: bool,
) -> WriteResult:
    n = len(batch)
    async with conn.transaction():
        seq = await conn.fetchval(
            "INSERT INTO ingest_batches (batch_key, source, rows, min_ts, max_ts) VALUES ($1, $2, $3, $4, $5) "
            "ON CONFLICT (batch_key) DO NOTHING RETURNING seq",
            batch_key, source, n, _ts(lo), _ts(hi),
        )
        if seq is None:
            return WriteResult(0, n, already_committed=True)
        payload = encode_readings(tag_ids, batch.ts, batch.value, batch.quality, batch.status, int(seq))
        if not staged:
            await conn.copy_to_table("readings", source=io.BytesIO(payload), columns=COPY_COLUMNS, format="binary")
            await conn.execute(_STAMP, seq)
            return WriteResult(n, 0)
        await conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS readings_stage "
            "(tag_id integer, ts timestamptz, value double precision, quality smallint, status bigint, "
            "batch_seq bigint) ON COMMIT DELETE ROWS"
        )
        await conn.copy_to_table("readings_stage", source=io.BytesIO(payload), columns=COPY_COLUMNS, format="binary")
        inserted = await conn.fetchval(
            "WITH ins AS (INSERT INTO readings SELECT DISTINCT ON (tag_id, ts) * FROM readings_stage "
            "ORDER BY tag_id, ts ON CONFLICT (tag_id, ts) DO NOTHING RETURNING 1) SELECT count(*) FROM ins"
        )
        await conn.execute("UPDATE ingest_batches SET rows = $1, committed_at = clock_timestamp() WHERE seq = $2",
                           int(inserted), seq)
        return WriteResult(int(inserted), n - int(inserted))


async def write_outages(conn: asyncpg.Connection, events: Sequence[Outage]) -> None:
    """Apply down/up events in order: down opens a window (if none is open), up closes it."""
    async with conn.transaction():
        for e in events:
            if e.down:
                await open_outage(conn, e)
            else:
                await close_outage(conn, e)


async def open_outage(conn: asyncpg.Connection, e: Outage) -> None:
    await conn.execute(
        "INSERT INTO source_status (source, device, down_at, reason, instance) VALUES ($1, $2, $3, $4, $5) "
        "ON CONFLICT (source, device) WHERE up_at IS NULL DO NOTHING",
        e.source, e.device, _ts(e.at_us), e.reason[:500], e.instance,
    )


async def close_outage(conn: asyncpg.Connection, e: Outage) -> None:
    await conn.execute(
        "UPDATE source_status SET up_at = greatest($3, down_at) WHERE source = $1 AND device = $2 AND up_at IS NULL",
        e.source, e.device, _ts(e.at_us),
    )


async def write_dead_letters(conn: asyncpg.Connection, items: Sequence[DeadLetter], keep: int) -> None:
    """Insert dead letters and trim the table to the newest ``keep`` rows."""
    if not items:
        return
    await conn.executemany(
        "INSERT INTO dead_letters (received_at, source, reason, detail, payload) VALUES ($1, $2, $3, $4, $5)",
        [(_ts(d.at_us), d.source, d.reason, d.detail[:2000], d.payload) for d in items],
    )
    await conn.execute(
        "DELETE FROM dead_letters WHERE id <= (SELECT id FROM dead_letters ORDER BY id DESC OFFSET $1 LIMIT 1)", keep
    )


def pg_us(ts_us: int) -> int:
    return ts_us - PG_EPOCH_US
