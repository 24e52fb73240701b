"""The read side of a tenant's ``dead_letters`` table (malformed or unmappable input kept with its
reason and source; written by :func:`ingestd.storage.store.write_dead_letters`, trimmed there to the
newest rows)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import asyncpg

from ..errors import StorageSchemaError

__all__ = ["DeadLetterRow", "DeadLetterSummary", "list_dead_letters", "summarize_dead_letters"]


@dataclass(frozen=True, slots=True)
class DeadLetterRow:
    id: int
    received_at: dt.datetime
    source: str
    reason: str
    detail: str
    payload: bytes | None


@dataclass(frozen=True, slots=True)
class DeadLetterSummary:
    source: str
    reason: str
    count: int
    last: dt.datetime


async def list_dead_letters(conn: asyncpg.Connection, *, source: str | None = None, reason: str | None = None,
                            limit: int = 50, before_id: int | None = None) -> list[DeadLetterRow]:
    """Newest first, optionally filtered by source and reason; ``before_id`` pages further back."""
    try:
        rows = await conn.fetch(
            "SELECT id, received_at, source, reason, detail, payload FROM dead_letters "
            "WHERE ($1::text IS NULL OR source = $1) AND ($2::text IS NULL OR reason = $2) "
            "AND ($3::bigint IS NULL OR id < $3) ORDER BY id DESC LIMIT $4",
            source, reason, before_id, limit,
        )
    except asyncpg.UndefinedTableError:
        raise StorageSchemaError("no dead_letters table: the database is not migrated (run `ingestd migrate`)") \
            from None
    return [DeadLetterRow(r["id"], r["received_at"], r["source"], r["reason"], r["detail"],
                          bytes(r["payload"]) if r["payload"] is not None else None) for r in rows]


async def summarize_dead_letters(conn: asyncpg.Connection) -> list[DeadLetterSummary]:
    """Count and newest time per (source, reason)."""
    try:
        rows = await conn.fetch(
            "SELECT source, reason, count(*) AS n, max(received_at) AS last FROM dead_letters "
            "GROUP BY source, reason ORDER BY n DESC, source, reason")
    except asyncpg.UndefinedTableError:
        raise StorageSchemaError("no dead_letters table: the database is not migrated (run `ingestd migrate`)") \
            from None
    return [DeadLetterSummary(r["source"], r["reason"], int(r["n"]), r["last"]) for r in rows]
