"""Advisory-lock leases in the coordination database: the SQL and the connection (DESIGN §9).

One dedicated connection per ingestd process holds session-level advisory locks
(``pg_try_advisory_lock(bigint)``), one per leased source. A lock lives exactly as long as the
session: when the process dies the server drops the session and the lock with it; when the
connection breaks, this process must consider every lock lost. TCP keepalives are tightened on the
server side so that a silently vanished peer (network partition, powered-off box) releases its locks
within about 15 s instead of the kernel default of hours.

Every failure is a :class:`~ingestd.errors.StorageUnavailable` with passwords redacted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection
from typing import Any

import asyncpg

from ..config.types import Secret, SecretUnavailable
from ..errors import StorageUnavailable
from .pool import redact

__all__ = ["LeaseDb"]

_TRY = "SELECT k FROM unnest($1::bigint[]) AS k WHERE pg_try_advisory_lock(k)"
_UNLOCK = "SELECT pg_advisory_unlock(k) FROM unnest($1::bigint[]) AS k"
# bigint keys are stored as classid (high 32 bits) / objid (low 32 bits), objsubid = 1
_HELD = """SELECT classid::bigint AS hi, objid::bigint AS lo FROM pg_locks
           WHERE locktype = 'advisory' AND objsubid = 1 AND granted AND pid = pg_backend_pid()"""
_KEEPALIVE = {"tcp_keepalives_idle": "5", "tcp_keepalives_interval": "2", "tcp_keepalives_count": "3",
              "tcp_user_timeout": "10000"}


def _u64(key: int) -> int:
    return key & 0xFFFF_FFFF_FFFF_FFFF


class LeaseDb:
    """The coordination connection. Calls are serialised; each one is bounded by ``timeout``."""

    def __init__(self, dsn: Secret, *, application_name: str, timeout: float) -> None:
        self._dsn = dsn
        self._app = application_name
        self.timeout = timeout
        self._conn: Any = None
        self._dsn_text = ""
        self._lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    def _error(self, exc: BaseException, what: str) -> StorageUnavailable:
        msg = redact(f"{type(exc).__name__}: {exc}", self._dsn_text) if str(exc) else type(exc).__name__
        return StorageUnavailable(f"coordination database: {what}: {msg}")

    async def connect(self) -> None:
        try:
            self._dsn_text = self._dsn.reveal()
        except SecretUnavailable as exc:
            raise StorageUnavailable(f"coordination database: DSN unavailable: {exc}") from None
        try:
            self._conn = await asyncpg.connect(self._dsn_text, timeout=self.timeout,
                                               server_settings={"application_name": self._app, **_KEEPALIVE})
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
            raise self._error(exc, "cannot connect") from None

    async def _call(self, what: str, sql: str, *args: Any) -> list[Any]:
        if not self.connected:
            raise StorageUnavailable("coordination database: not connected")
        async with self._lock:
            try:
                rows: list[Any] = await asyncio.wait_for(self._conn.fetch(sql, *args), self.timeout)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                self.abort()
                raise self._error(exc, what) from None
        return rows

    async def try_lock(self, keys: Collection[int]) -> set[int]:
        """Try to take each lock without waiting; returns the keys now held by this session."""
        if not keys:
            return set()
        rows = await self._call("try lock", _TRY, list(keys))
        return {int(r["k"]) for r in rows}

    async def unlock(self, keys: Collection[int]) -> None:
        if keys:
            await self._call("unlock", _UNLOCK, list(keys))

    async def held(self) -> set[int]:
        """The keys this session holds according to the server (doubles as the liveness check),
        as unsigned 64-bit numbers (compare with ``key & 0xFFFF_FFFF_FFFF_FFFF``)."""
        rows = await self._call("liveness check", _HELD)
        return {(int(r["hi"]) << 32) | int(r["lo"]) for r in rows}

    @staticmethod
    def unsigned(key: int) -> int:
        return _u64(key)

    def abort(self) -> None:
        """Drop the connection at once (the server releases every lock of the session)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(OSError, asyncpg.InterfaceError):
                conn.terminate()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await asyncio.wait_for(conn.close(), self.timeout)
            except (OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresError):
                conn.terminate()
