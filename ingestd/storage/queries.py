"""The read side of a tenant database, for the query API: every SQL statement the API runs is here.

Bulk reads (raw series, the change feed, ML export) use ``COPY (SELECT ...) TO STDOUT (FORMAT binary)``
and decode the rows with one NumPy ``frombuffer`` — no Python object per row. NULLs are replaced
in SQL (``coalesce(value, 'NaN')``) so every row has the same width.

All statements are parameterized (asyncpg renders ``COPY`` arguments server-side with
``quote_literal``); relation names come from a fixed allow-list (:data:`ROLLUPS`).

Errors: asyncpg's "relation/column does not exist" becomes :class:`StorageSchemaError`; the
connection-level failures are translated by :class:`~ingestd.storage.pool.TenantDb`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import asyncpg
import numpy as np
import numpy.typing as npt
import orjson

from ..errors import StorageError, StorageSchemaError
from .copy import PG_EPOCH_US
from .maintenance import LEDGER_KEEP_S

__all__ = [
    "LEDGER_KEEP_S",
    "ROLLUPS",
    "Columns",
    "LedgerBatch",
    "OutageRow",
    "TagRow",
    "count_raw",
    "export_chunk",
    "glob_to_like",
    "ledger_page",
    "ledger_start",
    "list_outages",
    "page_readings",
    "raw_bucketed",
    "raw_series",
    "rollup_fresh_from",
    "rollup_relations",
    "rollup_series",
    "search_tags",
    "server_now_us",
    "tag_ids",
    "tag_names",
]

ROLLUPS: Final = {"1m": ("readings_1m", 60), "1h": ("readings_1h", 3600), "1d": ("readings_1d", 86400)}
"""resolution → (relation, bucket width in seconds). The only relation names ever put into SQL."""

_HEADER_LEN: Final = 19  # "PGCOPY\n\377\r\n\0" + flags (4) + header extension length (4)
_TRAILER_LEN: Final = 2
_MAX_SEQ: Final = 2**63 - 1
_SCHEMA_STATES: Final = ("42P01", "42703", "42883")  # undefined table / column / function

Columns = dict[str, npt.NDArray[Any]]
"""Column name → NumPy array (native byte order, contiguous)."""

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class TagRow:
    tag_id: int
    name: str
    source: str
    unit: str
    data_type: str
    description: str
    meta: Mapping[str, Any]
    created_us: int
    updated_us: int


@dataclass(frozen=True, slots=True)
class OutageRow:
    id: int
    source: str
    device: str
    down_us: int
    up_us: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class LedgerBatch:
    txid: int
    seq: int
    rows: int
    min_us: int
    max_us: int
    committed_us: int


def _us(ts: dt.datetime) -> int:
    return (ts - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)


def _ts(us: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=us)


@asynccontextmanager
async def _schema_errors() -> AsyncIterator[None]:
    try:
        yield
    except asyncpg.PostgresError as exc:
        if getattr(exc, "sqlstate", "") in _SCHEMA_STATES:
            raise StorageSchemaError(f"tenant database schema is missing or outdated: {exc}") from None
        raise


async def _guard(call: Callable[[], Awaitable[T]]) -> T:
    async with _schema_errors():
        return await call()


# ---------------------------------------------------------------------------------------------- binary COPY


def _row_dtype(fields: Sequence[tuple[str, str]]) -> np.dtype[np.void]:
    spec: list[tuple[str, str]] = [("_nf", ">i2")]
    for name, typ in fields:
        spec += [(f"_l_{name}", ">i4"), (name, typ)]
    return np.dtype(spec)


async def _copy(conn: asyncpg.Connection, sql: str, args: Sequence[object],
                fields: Sequence[tuple[str, str]]) -> Columns:
    """Run ``COPY (sql) TO STDOUT (FORMAT binary)``; decode fixed-width, NULL-free rows into columns."""
    chunks: list[bytes] = []

    async def sink(data: bytes) -> None:
        chunks.append(bytes(data))

    async with _schema_errors():
        await conn.copy_from_query(sql, *args, output=sink, format="binary")
    buf = b"".join(chunks)
    chunks.clear()
    dtype = _row_dtype(fields)
    body = len(buf) - _HEADER_LEN - _TRAILER_LEN
    if body < 0 or body % dtype.itemsize:
        raise StorageError(f"unexpected binary COPY layout ({len(buf)} bytes for rows of {dtype.itemsize})")
    rows = np.frombuffer(buf, dtype=dtype, count=body // dtype.itemsize, offset=_HEADER_LEN)
    if rows.shape[0] and (rows["_nf"] != len(fields)).any():
        raise StorageError("unexpected field count in binary COPY output")
    out: Columns = {}
    for name, typ in fields:
        width = np.dtype(typ).itemsize
        if rows.shape[0] and (rows[f"_l_{name}"] != width).any():
            raise StorageError(f"unexpected NULL or width in column {name!r} of binary COPY output")
        out[name] = np.ascontiguousarray(rows[name].astype(np.dtype(typ).newbyteorder("=")))
    if "ts" in out:
        out["ts"] = out["ts"] + PG_EPOCH_US
    return out


_RAW_FIELDS: Final = (("tag_id", ">i4"), ("ts", ">i8"), ("value", ">f8"), ("quality", ">i2"), ("status", ">i8"))
_ROLLUP_FIELDS: Final = (("tag_id", ">i4"), ("ts", ">i8"), ("value", ">f8"), ("min", ">f8"), ("max", ">f8"),
                         ("sum", ">f8"), ("count", ">i8"), ("non_good", ">i8"))
_RAW_COLS: Final = ("tag_id, ts, coalesce(value, 'NaN'::float8), quality, status")


# ---------------------------------------------------------------------------------------------- tags


def glob_to_like(glob: str) -> str:
    """``well_1*.pressure?`` → ``well\\_1%.pressure_`` (LIKE pattern with ``\\`` as escape)."""
    out = []
    for ch in glob:
        if ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        elif ch in "%_\\":
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def _substring(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


async def search_tags(conn: asyncpg.Connection, *, glob: str | None = None, contains: str | None = None,
                      source: str | None = None, unit: str | None = None, after: str | None = None,
                      limit: int = 100) -> list[TagRow]:
    """Tags ordered by name, filtered; keyset pagination with ``after`` (the last name seen)."""
    rows = await _guard(lambda: conn.fetch(
        "SELECT tag_id, name, source, unit, data_type, description, meta::text AS meta, created_at, updated_at "
        "FROM tags WHERE ($1::text IS NULL OR name LIKE $1 ESCAPE '\\') "
        "AND ($2::text IS NULL OR name ILIKE $2 ESCAPE '\\') AND ($3::text IS NULL OR source = $3) "
        "AND ($4::text IS NULL OR unit = $4) AND ($5::text IS NULL OR name > $5) ORDER BY name LIMIT $6",
        None if glob is None else glob_to_like(glob), None if contains is None else _substring(contains),
        source, unit, after, limit,
    ))
    return [TagRow(r["tag_id"], r["name"], r["source"], r["unit"], r["data_type"], r["description"],
                   orjson.loads(r["meta"]), _us(r["created_at"]), _us(r["updated_at"])) for r in rows]


async def tag_ids(conn: asyncpg.Connection, names: Sequence[str] = (), *, glob: str | None = None,
                  limit: int = 100_000) -> dict[str, int]:
    """name → tag_id for the given names and/or the names matching ``glob`` (at most ``limit``)."""
    rows = await _guard(lambda: conn.fetch(
        "SELECT name, tag_id FROM tags WHERE name = ANY($1::text[]) "
        "OR ($2::text IS NOT NULL AND name LIKE $2 ESCAPE '\\') ORDER BY name LIMIT $3",
        list(names), None if glob is None else glob_to_like(glob), limit,
    ))
    return {r["name"]: r["tag_id"] for r in rows}


async def tag_names(conn: asyncpg.Connection, ids: Sequence[int]) -> dict[int, str]:
    """tag_id → name."""
    rows = await _guard(lambda: conn.fetch("SELECT tag_id, name FROM tags WHERE tag_id = ANY($1::int[])",
                                           list(ids)))
    return {r["tag_id"]: r["name"] for r in rows}


# ---------------------------------------------------------------------------------------------- source status


async def list_outages(conn: asyncpg.Connection, *, sources: Sequence[str] | None, start_us: int, end_us: int,
                       after_id: int | None, limit: int) -> list[OutageRow]:
    """Outage windows overlapping [start, end), newest first, keyset on ``id``."""
    rows = await _guard(lambda: conn.fetch(
        "SELECT id, source, device, down_at, up_at, reason FROM source_status "
        "WHERE ($1::text[] IS NULL OR source = ANY($1)) AND down_at < $3 AND (up_at IS NULL OR up_at >= $2) "
        "AND ($4::bigint IS NULL OR id < $4) ORDER BY id DESC LIMIT $5",
        None if sources is None else list(sources), _ts(start_us), _ts(end_us), after_id, limit,
    ))
    return [OutageRow(r["id"], r["source"], r["device"], _us(r["down_at"]),
                      None if r["up_at"] is None else _us(r["up_at"]), r["reason"]) for r in rows]


# ---------------------------------------------------------------------------------------------- series


async def rollup_relations(conn: asyncpg.Connection) -> frozenset[str]:
    """The rollup resolutions (``1m``/``1h``/``1d``) whose relation exists in this database."""
    row = await conn.fetchrow(
        "SELECT to_regclass('readings_1m') IS NOT NULL AS m, to_regclass('readings_1h') IS NOT NULL AS h, "
        "to_regclass('readings_1d') IS NOT NULL AS d"
    )
    found = {"1m": row["m"], "1h": row["h"], "1d": row["d"]}
    return frozenset(k for k, v in found.items() if v)


async def rollup_fresh_from(conn: asyncpg.Connection) -> int | None:
    """Earliest source time (µs) of readings not yet folded into the rollups: batches at or above the
    refresher's watermark (``rollup_state``). Buckets from there on must come from raw readings.
    ``None`` when every committed batch is folded (or there is no refresher state)."""
    if not await conn.fetchval("SELECT to_regclass('rollup_state') IS NOT NULL"):
        return None
    ts = await _guard(lambda: conn.fetchval(
        "SELECT min(b.min_ts) FROM ingest_batches b "
        "WHERE b.txid >= (SELECT watermark FROM rollup_state WHERE name = 'rollups')"
    ))
    return None if ts is None else _us(ts)


async def count_raw(conn: asyncpg.Connection, ids: Sequence[int], start_us: int, end_us: int, cap: int) -> int:
    """Raw rows in range, counting at most ``cap`` (cheap answer to "more than cap?")."""
    n = await _guard(lambda: conn.fetchval(
        "SELECT count(*) FROM (SELECT 1 FROM readings WHERE tag_id = ANY($1::int[]) AND ts >= $2 AND ts < $3 "
        "LIMIT $4) s", list(ids), _ts(start_us), _ts(end_us), cap,
    ))
    return int(n)


async def raw_series(conn: asyncpg.Connection, ids: Sequence[int], start_us: int, end_us: int,
                     limit: int) -> Columns:
    """Raw readings ordered by (tag_id, ts); at most ``limit`` rows."""
    return await _copy(
        conn,
        f"SELECT {_RAW_COLS} FROM readings WHERE tag_id = ANY($1::int[]) AND ts >= $2 AND ts < $3 "
        "ORDER BY tag_id, ts LIMIT $4",
        (list(ids), _ts(start_us), _ts(end_us), limit), _RAW_FIELDS,
    )


async def raw_bucketed(conn: asyncpg.Connection, ids: Sequence[int], start_us: int, end_us: int,
                       width_us: int) -> Columns:
    """Raw readings aggregated on the fly into ``width_us`` buckets (when no rollup relation exists)."""
    return await _copy(
        conn,
        "SELECT tag_id, $2::timestamptz + (b * $4::bigint) * interval '1 microsecond', "
        "coalesce(avg(value), 'NaN'), coalesce(min(value), 'NaN'), coalesce(max(value), 'NaN'), "
        "coalesce(sum(value), 'NaN'), count(value)::int8, count(*) FILTER (WHERE quality <> 0)::int8 "
        "FROM (SELECT tag_id, value, quality, "
        "      floor(extract(epoch FROM ts - $2::timestamptz) * 1000000 / $4::bigint)::int8 AS b "
        "      FROM readings WHERE tag_id = ANY($1::int[]) AND ts >= $2 AND ts < $3) s "
        "GROUP BY tag_id, b ORDER BY tag_id, b",
        (list(ids), _ts(start_us), _ts(end_us), width_us), _ROLLUP_FIELDS,
    )


async def rollup_series(conn: asyncpg.Connection, resolution: str, ids: Sequence[int], start_us: int,
                        end_us: int, limit: int) -> Columns:
    """Rollup buckets starting in [start, end) ordered by (tag_id, bucket); at most ``limit`` rows."""
    relation = ROLLUPS[resolution][0]  # KeyError for anything outside the allow-list
    return await _copy(
        conn,
        f"SELECT tag_id, bucket, coalesce(avg, 'NaN'), coalesce(min, 'NaN'), coalesce(max, 'NaN'), "
        f"coalesce(sum, 'NaN'), coalesce(count, 0)::int8, coalesce(non_good, 0)::int8 FROM {relation} "
        "WHERE tag_id = ANY($1::int[]) AND bucket >= $2 AND bucket < $3 ORDER BY tag_id, bucket LIMIT $4",
        (list(ids), _ts(start_us), _ts(end_us), limit), _ROLLUP_FIELDS,
    )


# ---------------------------------------------------------------------------------------------- change feed


async def server_now_us(conn: asyncpg.Connection) -> int:
    return _us(await conn.fetchval("SELECT clock_timestamp()"))


async def ledger_start(conn: asyncpg.Connection, since_us: int) -> tuple[int, int]:
    """A position (txid, seq) from which the feed returns the batches committed from about ``since_us``
    on (the first one by ``committed_at``, via its index) and every batch of transactions still in
    flight (their txids are ≥ the snapshot's xmin)."""
    row = await _guard(lambda: conn.fetchrow(
        "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin, "
        "b.txid::text::bigint AS txid, b.seq FROM (SELECT 1) one LEFT JOIN LATERAL (SELECT txid, seq "
        "FROM ingest_batches WHERE committed_at >= $1 ORDER BY committed_at LIMIT 1) b ON true",
        _ts(since_us),
    ))
    in_flight = (int(row["xmin"]) - 1, _MAX_SEQ)
    if row["txid"] is None:
        return in_flight
    return min(in_flight, (int(row["txid"]), int(row["seq"]) - 1))


async def ledger_page(conn: asyncpg.Connection, after: tuple[int, int], limit: int) -> tuple[list[LedgerBatch], int]:
    """Committed batches after ``after`` = (txid, seq) in (txid, seq) order, only from transactions older
    than the snapshot's xmin (so no batch can later appear before them), and the server time."""
    rows = await _guard(lambda: conn.fetch(
        "SELECT txid::text::bigint AS txid, seq, rows, min_ts, max_ts, committed_at, clock_timestamp() AS now "
        "FROM ingest_batches WHERE (txid, seq) > ($1::text::xid8, $2::bigint) "
        "AND txid < pg_snapshot_xmin(pg_current_snapshot()) ORDER BY txid, seq LIMIT $3",
        str(after[0]), after[1], limit,
    ))
    batches = [LedgerBatch(int(r["txid"]), int(r["seq"]), int(r["rows"]), _us(r["min_ts"]), _us(r["max_ts"]),
                           _us(r["committed_at"])) for r in rows]
    now = _us(rows[0]["now"]) if rows else await server_now_us(conn)
    return batches, now


async def page_readings(conn: asyncpg.Connection, batches: Sequence[LedgerBatch]) -> Columns:
    """The readings written by ``batches`` (via the BRIN index on batch_seq and each batch's time range)."""
    fields = (*_RAW_FIELDS, ("batch_seq", ">i8"))
    if not batches:
        return {name: np.empty(0, np.dtype(t).newbyteorder("=")) for name, t in fields}
    seqs = [b.seq for b in batches]
    lo = min(b.min_us for b in batches)
    hi = max(b.max_us for b in batches)
    return await _copy(
        conn,
        f"SELECT {_RAW_COLS}, batch_seq FROM readings WHERE batch_seq = ANY($1::bigint[]) "
        "AND batch_seq BETWEEN $2 AND $3 AND ts BETWEEN $4 AND $5",
        (seqs, min(seqs), max(seqs), _ts(lo), _ts(hi)), fields,
    )


# ---------------------------------------------------------------------------------------------- export


async def export_chunk(conn: asyncpg.Connection, ids: Sequence[int], start_us: int, end_us: int,
                       after: tuple[int, int] | None, limit: int, max_quality: int) -> Columns:
    """One keyset page of readings ordered by (tag_id, ts) strictly after ``after``."""
    a_tag, a_ts = after if after is not None else (-1, start_us - 1)
    return await _copy(
        conn,
        f"SELECT {_RAW_COLS} FROM readings WHERE tag_id = ANY($1::int[]) AND ts >= $2 AND ts < $3 "
        "AND (tag_id, ts) > ($4::int, $5::timestamptz) AND quality <= $6 ORDER BY tag_id, ts LIMIT $7",
        (list(ids), _ts(start_us), _ts(end_us), a_tag, _ts(a_ts), max_quality, limit), _RAW_FIELDS,
    )
