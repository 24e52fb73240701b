"""Plain-PostgreSQL tier: daily range partitions of ``readings``, created ahead, dropped when expired."""

from __future__ import annotations

import datetime as dt
import re
from typing import Final

import asyncpg

__all__ = ["drop_expired_partitions", "ensure_partitions", "partition_name"]

_PART_RE: Final = re.compile(r"^readings_p(\d{8})$")
_DAY: Final = dt.timedelta(days=1)
_LOCK_KEY: Final = 0x1A6E57E


def partition_name(day: dt.date) -> str:
    return f"readings_p{day:%Y%m%d}"


def _day_of(ts_us: int) -> dt.date:
    return dt.datetime.fromtimestamp(ts_us / 1e6, dt.UTC).date()


async def ensure_partitions(conn: asyncpg.Connection, first_us: int, last_us: int) -> list[str]:
    """Create the daily partitions covering [first_us, last_us] (µs, UTC). Returns the new ones."""
    first, last = _day_of(first_us), _day_of(last_us)
    if (last - first).days > 3660:
        raise ValueError("refusing to create more than 10 years of partitions at once")
    existing = {
        r["relname"] for r in await conn.fetch(
            """SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
               WHERE i.inhparent = 'readings'::regclass""")
    }
    wanted = []
    d = first
    while d <= last:
        if partition_name(d) not in existing:
            wanted.append(d)
        d += _DAY
    created: list[str] = []
    if not wanted:
        return created
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
        for day in wanted:
            name = partition_name(day)
            lo = dt.datetime.combine(day, dt.time(), dt.UTC)
            # Identifiers come from partition_name (digits only); bounds are formatted timestamps.
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF readings "
                f"FOR VALUES FROM ('{lo.isoformat()}') TO ('{(lo + _DAY).isoformat()}')"
            )
            created.append(name)
    return created


async def drop_expired_partitions(conn: asyncpg.Connection, older_than_us: int) -> list[str]:
    """Drop daily partitions that end at or before ``older_than_us``."""
    cutoff = _day_of(older_than_us)
    names = [
        r["relname"] for r in await conn.fetch(
            """SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
               WHERE i.inhparent = 'readings'::regclass""")
    ]
    dropped = []
    for name in sorted(names):
        m = _PART_RE.match(name)
        if not m:
            continue
        day = dt.datetime.strptime(m.group(1), "%Y%m%d").replace(tzinfo=dt.UTC).date()
        if day + _DAY <= cutoff:
            await conn.execute(f"DROP TABLE IF EXISTS {name}")
            dropped.append(name)
    return dropped
