"""Per-tenant connection pools: created lazily, kept small, connections closed when idle.

Every failure is translated into :class:`~ingestd.errors.StorageUnavailable` (transient) or
:class:`~ingestd.errors.StorageSchemaError`, with the DSN and password redacted from messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from ..config.model import PoolConfig
from ..config.types import Secret, SecretUnavailable
from ..errors import StorageSchemaError, StorageUnavailable

__all__ = ["TenantDb", "redact"]

log = logging.getLogger(__name__)

_PW_IN_DSN = re.compile(r"(://[^:/@\s]*:)([^@\s]*)(@)")
_PW_KV = re.compile(r"(password\s*=\s*)(\S+)", re.IGNORECASE)

# SQLSTATE classes that mean "the database is not usable right now" rather than "bad data".
_TRANSIENT_CLASSES = ("08", "53", "57", "58", "40", "55")


def redact(text: str, *secrets: str) -> str:
    """Remove passwords and whole DSNs from an error message."""
    for s in secrets:
        if s:
            text = text.replace(s, "<redacted>")
    text = _PW_IN_DSN.sub(r"\1***\3", text)
    return _PW_KV.sub(r"\1***", text)


class TenantDb:
    """Lazily created asyncpg pool for one tenant database."""

    def __init__(self, slug: str, dsn: Secret, cfg: PoolConfig, *, application_name: str = "ingestd") -> None:
        self.slug = slug
        self._dsn = dsn
        self._cfg = cfg
        self._app = application_name
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()
        self._dsn_text = ""

    def _error(self, exc: BaseException, what: str) -> StorageUnavailable:
        msg = redact(f"{type(exc).__name__}: {exc}", self._dsn_text)
        return StorageUnavailable(f"tenant {self.slug}: {what}: {msg}")

    async def _ensure_pool(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        async with self._lock:
            if self._pool is None:
                try:
                    self._dsn_text = self._dsn.reveal()
                except SecretUnavailable as exc:
                    raise StorageSchemaError(f"tenant {self.slug}: database DSN unavailable: {exc}") from None
                try:
                    self._pool = await asyncpg.create_pool(
                        self._dsn_text,
                        min_size=0,
                        max_size=self._cfg.max_size,
                        max_inactive_connection_lifetime=self._cfg.idle_timeout,
                        timeout=self._cfg.connect_timeout,
                        command_timeout=self._cfg.command_timeout,
                        server_settings={"application_name": self._app, "timezone": "UTC"},
                    )
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
                    raise self._error(exc, "cannot create pool") from None
            assert self._pool is not None
            return self._pool

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """Acquire a connection; connection-level failures become StorageUnavailable."""
        pool = await self._ensure_pool()
        try:
            conn = await pool.acquire(timeout=self._cfg.connect_timeout)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise self._error(exc, "cannot connect") from None
        try:
            yield conn
        except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                asyncpg.CannotConnectNowError, asyncpg.ConnectionDoesNotExistError) as exc:
            await self._discard(pool, conn)
            conn = None
            raise self._error(exc, "connection lost") from None
        except asyncpg.PostgresError as exc:
            if (getattr(exc, "sqlstate", "") or "")[:2] in _TRANSIENT_CLASSES:
                raise self._error(exc, "database unavailable") from None
            raise
        except TimeoutError as exc:
            await self._discard(pool, conn)
            conn = None
            raise self._error(exc, "statement timed out") from None
        finally:
            if conn is not None:
                with contextlib.suppress(asyncpg.InterfaceError, OSError, TimeoutError):
                    await pool.release(conn)

    @staticmethod
    async def _discard(pool: asyncpg.Pool, conn: Any) -> None:
        with contextlib.suppress(asyncpg.InterfaceError, OSError):
            conn.terminate()
        with contextlib.suppress(asyncpg.InterfaceError, OSError, TimeoutError):
            await pool.release(conn)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), timeout=5)
            except (TimeoutError, OSError, asyncpg.InterfaceError):
                pool.terminate()

    @property
    def open(self) -> bool:
        return self._pool is not None
