"""Plain-PostgreSQL tier: daily range partitions of ``readings``, created ahead, dropped when expired."""

from __future__ import annotations

import datetime as dt
import re
from typing import Final

import asyncpg

__all__ = ["create_partition", "drop_expired_partitions", "drop_partition", "ensure_partitions", "partition_name"]

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
    for day in wanted:
        lo = dt.datetime.combine(day, dt.time(), dt.UTC)
        if await create_partition(conn, "readings", partition_name(day), lo, lo + _DAY, lock_key=_LOCK_KEY):
            created.append(partition_name(day))
    return created


async def drop_partition(conn: asyncpg.Connection, parent: str, name: str) -> None:
    """Detach a partition without blocking readers of ``parent`` (``DETACH … CONCURRENTLY`` waits for
    them instead of locking them out), then drop it. Must run outside a transaction block."""
    try:
        await conn.execute(f"ALTER TABLE {parent} DETACH PARTITION {name} CONCURRENTLY")
    except asyncpg.ObjectInUseError:
        # an earlier detach was interrupted and is pending: complete it
        await conn.execute(f"ALTER TABLE {parent} DETACH PARTITION {name} FINALIZE")
    except asyncpg.UndefinedTableError:
        pass
    await conn.execute(f"DROP TABLE IF EXISTS {name}")


async def create_partition(conn: asyncpg.Connection, parent: str, name: str, lo: dt.datetime, hi: dt.datetime,
                           *, lock_key: int, key: str = "ts") -> bool:
    """Create range partition ``name`` of ``parent`` for [lo, hi) without blocking readers.

    ``CREATE TABLE … PARTITION OF`` holds an ACCESS EXCLUSIVE lock on the parent (every query on
    ``readings`` waits); creating the table on its own and ``ATTACH PARTITION`` needs only SHARE UPDATE
    EXCLUSIVE on the parent, and the CHECK constraint matching the bounds spares the validation scan.
    Serialised across processes by an advisory lock; returns False when it already existed.
    ``parent`` and ``name`` are identifiers built by this module's callers from fixed prefixes and digits.
    """
    bounds = f"FROM ('{lo.isoformat()}') TO ('{hi.isoformat()}')"
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key)
        attached = await conn.fetchval(
            "SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = $1::regclass AND c.relname = $2", parent, name)
        if attached:
            return False
        await conn.execute(f"CREATE TABLE IF NOT EXISTS {name} "
                           f"(LIKE {parent} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
        await conn.execute(
            f"ALTER TABLE {name} ADD CONSTRAINT {name}_bounds "
            f"CHECK ({key} IS NOT NULL AND {key} >= '{lo.isoformat()}' AND {key} < '{hi.isoformat()}')")
        await conn.execute(f"ALTER TABLE {parent} ATTACH PARTITION {name} FOR VALUES {bounds}")
        await conn.execute(f"ALTER TABLE {name} DROP CONSTRAINT {name}_bounds")
    return True


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
            await drop_partition(conn, "readings", name)
            dropped.append(name)
    return dropped
