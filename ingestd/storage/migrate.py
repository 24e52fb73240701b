"""Schema migrator and storage-tier detection (DESIGN §4).

Tiers:

* ``timescale`` — TimescaleDB with the community license: hypertable, continuous aggregates,
  compression, retention;
* ``apache``    — TimescaleDB Apache edition: hypertable, ingestd-maintained rollups, drop_chunks;
* ``postgres``  — plain PostgreSQL: native range partitions that ingestd creates ahead of time.

The tier is detected once and recorded in ``ingestd_meta``; later runs keep it, so a database never
silently changes layout. Migrations run under an advisory lock (several ingestd processes may start
at once), each file in its own transaction, and are recorded in ``schema_migrations``.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import Final

import asyncpg

from ..config.model import StorageConfig
from ..errors import StorageSchemaError
from .sql import interval_literal

__all__ = ["Migration", "MigrationReport", "Tier", "detect_tier", "load_migrations", "migrate"]

log = logging.getLogger(__name__)

_LOCK_KEY: Final = 0x1A6E57D  # advisory lock id for migrations (arbitrary, stable)
_FILE_RE: Final = re.compile(r"^(\d{3})_([a-z0-9_]+?)(?:\.(timescale|apache|postgres|timescaledb))?\.sql$")


class Tier(enum.StrEnum):
    TIMESCALE = "timescale"
    APACHE = "apache"
    POSTGRES = "postgres"

    @property
    def has_timescaledb(self) -> bool:
        return self is not Tier.POSTGRES

    @property
    def numeric(self) -> int:
        """1, 2 or 3 as numbered in DESIGN §4 (for the ``ingestd_storage_tier`` metric)."""
        return {Tier.TIMESCALE: 1, Tier.APACHE: 2, Tier.POSTGRES: 3}[self]


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    variant: str  # "" for the generic file
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()[:16]

    def applies_to(self, tier: Tier) -> int:
        """Specificity of this file for ``tier`` (higher wins); 0 = not applicable."""
        if self.variant == tier.value:
            return 3
        if self.variant == "timescaledb" and tier.has_timescaledb:
            return 2
        if self.variant == "":
            return 1
        return 0


@dataclass(frozen=True, slots=True)
class MigrationReport:
    tier: Tier
    timescaledb_version: str | None
    license: str | None
    applied: tuple[str, ...]
    server_version: str

    def describe(self) -> str:
        ts = "no TimescaleDB"
        if self.timescaledb_version:
            ts = f"TimescaleDB {self.timescaledb_version} ({self.license} license)"
        applied = ", ".join(self.applied) if self.applied else "none (up to date)"
        tier = f"tier {self.tier.numeric} ({self.tier.value})"
        return f"{tier}; PostgreSQL {self.server_version}; {ts}; applied: {applied}"


def load_migrations() -> list[Migration]:
    out = []
    for entry in resources.files("schema").iterdir():
        m = _FILE_RE.match(entry.name)
        if m:
            out.append(Migration(int(m.group(1)), m.group(2), m.group(3) or "", entry.read_text("utf-8")))
        elif entry.name.endswith(".sql"):
            raise StorageSchemaError(f"schema file {entry.name!r} does not follow NNN_name[.variant].sql")
    return sorted(out, key=lambda x: (x.version, x.variant))


def _select(migrations: list[Migration], tier: Tier) -> list[Migration]:
    best: dict[int, Migration] = {}
    for m in migrations:
        score = m.applies_to(tier)
        if score and (m.version not in best or score > best[m.version].applies_to(tier)):
            best[m.version] = m
    return [best[v] for v in sorted(best)]


async def detect_tier(conn: asyncpg.Connection, wanted: str) -> tuple[Tier, str | None, str | None]:
    """Pick the tier for a database: (tier, timescaledb version, license)."""
    recorded = await _recorded_tier(conn)
    installed = await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
    if installed is None and wanted != "postgres" and recorded in (None, Tier.APACHE, Tier.TIMESCALE):
        available = await conn.fetchval("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
        preload = await conn.fetchval("SELECT current_setting('shared_preload_libraries')")
        if available and "timescaledb" not in (preload or ""):
            # CREATE EXTENSION would fail and drop the connection: TimescaleDB must be preloaded.
            if wanted in ("timescale", "apache"):
                raise StorageSchemaError("TimescaleDB is installed but not in shared_preload_libraries")
            log.info("TimescaleDB is installed but not preloaded; using plain PostgreSQL")
            available = None
        if available:
            try:
                async with conn.transaction():
                    await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
                installed = await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
            except asyncpg.PostgresError as exc:
                if wanted in ("timescale", "apache") or recorded is not None:
                    raise StorageSchemaError(f"cannot enable TimescaleDB: {exc}") from None
                log.info("TimescaleDB is available but cannot be enabled (%s); using plain PostgreSQL", exc)
    license_ = None
    if installed is not None:
        license_ = await conn.fetchval("SELECT current_setting('timescaledb.license', true)")
    if recorded is not None:
        tier = recorded
    elif wanted == "postgres" or installed is None:
        tier = Tier.POSTGRES
    else:
        tier = Tier.TIMESCALE if license_ == "timescale" else Tier.APACHE
    if wanted not in ("auto", tier.value):
        raise StorageSchemaError(
            f"storage.tier is {wanted!r} but the database is {tier.value!r}"
            + (" (recorded at first migration; tiers never change in place)" if recorded else "")
        )
    if tier.has_timescaledb and installed is None:
        raise StorageSchemaError(f"database was migrated as {tier.value!r} but the timescaledb extension is missing")
    if tier is Tier.TIMESCALE and license_ != "timescale":
        raise StorageSchemaError(f"database was migrated as 'timescale' but timescaledb.license is {license_!r}")
    return tier, installed, license_


async def _recorded_tier(conn: asyncpg.Connection) -> Tier | None:
    exists = await conn.fetchval("SELECT to_regclass('ingestd_meta') IS NOT NULL")
    if not exists:
        return None
    v = await conn.fetchval("SELECT value FROM ingestd_meta WHERE key = 'tier'")
    return Tier(v) if v else None


def _render(sql: str, storage: StorageConfig) -> str:
    return sql.replace("{{chunk_interval}}", interval_literal(storage.chunk_interval))


async def migrate(conn: asyncpg.Connection, storage: StorageConfig) -> MigrationReport:
    """Bring one tenant database up to date. Idempotent and safe to run concurrently."""
    server_version = await conn.fetchval("SHOW server_version")
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        tier, ts_version, license_ = await detect_tier(conn, storage.tier)
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY, name text NOT NULL, variant text NOT NULL,
                   checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {r["version"]: r for r in await conn.fetch("SELECT version, name, checksum FROM schema_migrations")}
        applied = []
        for m in _select(load_migrations(), tier):
            if m.version in done:
                continue
            log.info("tenant migration %03d_%s (%s)", m.version, m.name, m.variant or "all tiers")
            async with conn.transaction():
                await conn.execute(_render(m.sql, storage))
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, variant, checksum) VALUES ($1, $2, $3, $4)",
                    m.version, m.name, m.variant, m.checksum,
                )
            applied.append(f"{m.version:03d}_{m.name}")
        await conn.execute(
            """INSERT INTO ingestd_meta (key, value) VALUES ('tier', $1)
               ON CONFLICT (key) DO NOTHING""",
            tier.value,
        )
        return MigrationReport(tier, ts_version, license_, tuple(applied), server_version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)


async def current_tier(conn: asyncpg.Connection) -> Tier:
    """The recorded tier of a migrated database (StorageSchemaError if not migrated)."""
    tier = await _recorded_tier(conn)
    if tier is None:
        raise StorageSchemaError("database is not migrated (run `ingestd migrate`)")
    return tier
