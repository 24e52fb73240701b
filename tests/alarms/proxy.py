"""A TCP proxy in front of a real PostgreSQL server whose link can be cut and restored: the tenant database
"goes down" for everything behind the proxy (writer, alarm engine) while the server keeps running."""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["CuttableProxy"]


class CuttableProxy:
    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (host, target_port)
        self.port = 0
        self.up = True
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def dsn(self, db: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    async def __aenter__(self) -> CuttableProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self._drop_all()
        for t in list(self._tasks):
            t.cancel()
        await self._server.wait_closed()

    def cut(self) -> None:
        """Close every connection and refuse new ones (like a network partition that resets)."""
        self.up = False
        self._drop_all()

    def restore(self) -> None:
        self.up = True

    def _drop_all(self) -> None:
        for w in list(self._conns):
            with contextlib.suppress(Exception):
                w.transport.abort()
        self._conns.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.transport.abort()
            return
        try:
            ur, uw = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._conns |= {writer, uw}
        t1 = asyncio.create_task(self._pipe(reader, uw))
        t2 = asyncio.create_task(self._pipe(ur, writer))
        self._tasks |= {t1, t2}
        await asyncio.wait({t1, t2}, return_when=asyncio.FIRST_COMPLETED)
        for t in (t1, t2):
            t.cancel()
        for w in (writer, uw):
            self._conns.discard(w)
            w.transport.abort()
        self._tasks -= {t1, t2}

    @staticmethod
    async def _pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError, OSError):
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
