"""The query API as a daemon extension: uvicorn serving the FastAPI app on the daemon's event loop.

* ``start``: binds ``api.listen`` (port 0 picks a free port; the bound port goes to
  ``daemon.api_port`` and ``runtime.json``), registers the live-stream listener on the router and runs
  ``uvicorn.Server.serve()`` as a task — no thread, no second loop, no signal handlers (the daemon owns
  SIGTERM/SIGHUP). If the address is taken, ingestion goes on: the error is logged once and binding is
  retried with backoff until it succeeds.
* ``reload``: new tokens and options apply to the next request; WebSocket clients whose token was
  removed (or whose tenant was) are disconnected; a changed ``api.listen`` rebinds.
* ``stop``: graceful — stops accepting, lets requests finish (5 s), closes streams and pools.

Access logs are off: query strings of signed acknowledge links are credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import Any, Final, Literal

import uvicorn

from ..config.load import IngestdConfig
from ..daemon import Daemon
from .app import create_app
from .context import ApiContext, ApiMetrics, ApiOptions
from .security import TokenIndex, base_host_of
from .stream import StreamHub

__all__ = ["ApiExtension"]

log = logging.getLogger(__name__)

_GRACE_S: Final = 5.0
_RETRY_MAX_S: Final = 60.0


class _NoAccessLog(logging.Filter):
    """uvicorn's access log would carry query strings — signed ack links are credentials. Dropped
    at the logger, whatever handlers tests or operators attach."""

    def filter(self, record: logging.LogRecord) -> bool:
        return False


def _silence_access_log() -> None:
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _NoAccessLog) for f in access.filters):
        access.addFilter(_NoAccessLog())


class _Server(uvicorn.Server):
    """uvicorn without its signal handling: the daemon decides when the API stops."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _bind(listen: str, sndbuf: int | None = None) -> socket.socket:
    host, _, port = listen.rpartition(":")
    host = host or "0.0.0.0"  # noqa: S104 -- "" in api.listen means every interface, as documented
    infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if sndbuf:  # inherited by accepted connections: bounds kernel memory per (slow) client
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        sock.bind(addr)
        sock.listen(1024)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class ApiExtension:
    def __init__(self, *, metrics_auth: Literal["admin", "open"] | None = None, ws_queue: int = 256,
                 ws_max_clients: int = 2000, ws_flush_interval: float = 0.02, raw_cap: int = 500_000,
                 export_chunk: int = 20_000, socket_sndbuf: int | None = None) -> None:
        self._knobs: dict[str, Any] = {"ws_queue": ws_queue, "ws_max_clients": ws_max_clients, "raw_cap": raw_cap,
                                       "export_chunk": export_chunk, "ws_flush_interval": ws_flush_interval}
        self._metrics_auth = metrics_auth
        self._sndbuf = socket_sndbuf
        self.ctx: ApiContext | None = None
        self._daemon: Daemon | None = None
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._retry: asyncio.Task[None] | None = None
        self._listen: str | None = None

    def _options(self, cfg: IngestdConfig) -> ApiOptions:
        auth = self._metrics_auth or cfg.api.metrics_auth
        return ApiOptions(base_host=base_host_of(cfg.api.public_url), tenant_from_host=cfg.api.tenant_from_host,
                          metrics_auth="open" if auth == "open" else "admin", **self._knobs)

    # ------------------------------------------------------------------ Extension protocol
    async def start(self, daemon: Daemon) -> None:
        self._daemon = daemon
        listen = daemon.cfg.api.listen
        if listen is None:
            log.info("query API disabled (api.listen is not set)")
            return
        options = self._options(daemon.cfg)
        tokens = TokenIndex(daemon.cfg.tenants)
        hub = StreamHub(ApiMetrics.of(daemon.metrics.registry), queue_max=options.ws_queue,
                        flush_interval=options.ws_flush_interval)
        self.ctx = ApiContext(daemon, options, tokens, hub)
        daemon.router.listeners.append(hub.listener)
        hub.start()
        if not tokens:
            log.warning("query API: no api_tokens configured; every request except /healthz will be refused")
        await self._listen_on(listen)

    async def stop(self) -> None:
        await self._stop_server()
        ctx, self.ctx = self.ctx, None
        if ctx is not None:
            with contextlib.suppress(ValueError):
                ctx.daemon.router.listeners.remove(ctx.hub.listener)
            await ctx.hub.stop()
            await ctx.close()

    async def reload(self, daemon: Daemon, old: IngestdConfig) -> None:
        cfg = daemon.cfg
        if self.ctx is None:
            if cfg.api.listen is not None:
                await self.start(daemon)
            return
        if cfg.api.listen is None:
            await self.stop()
            return
        tokens = TokenIndex(cfg.tenants)
        await self.ctx.reconfigure(cfg, self._options(cfg), tokens)
        hub = self.ctx.hub
        for slug in {t.slug for t in old.tenants} - {t.slug for t in cfg.tenants}:
            hub.close_tenant(slug)
        for c in list(hub.clients()):
            p = tokens.revalidate(c.principal_id)
            if p is None or p.tenant != c.tenant:
                c.close_code = 1008
                hub.remove(c)
        if cfg.api.listen != self._listen:
            log.info("query API: listen address changed to %s", cfg.api.listen)
            await self._stop_server()
            await self._listen_on(cfg.api.listen)

    # ------------------------------------------------------------------ server
    async def _listen_on(self, listen: str) -> None:
        self._listen = listen
        try:
            sock = _bind(listen, self._sndbuf)
        except OSError as exc:
            log.error("query API: cannot listen on %s (%s); ingestion continues, retrying", listen, exc.strerror or exc)
            self._retry = asyncio.create_task(self._retry_bind(listen), name="api:bind-retry")
            return
        self._serve(sock)

    async def _retry_bind(self, listen: str) -> None:
        delay = 1.0
        while True:
            await asyncio.sleep(delay)
            try:
                sock = _bind(listen, self._sndbuf)
            except OSError:
                delay = min(_RETRY_MAX_S, delay * 2)
                continue
            log.warning("query API: listening on %s now", listen)
            self._serve(sock)
            return

    def _serve(self, sock: socket.socket) -> None:
        assert self.ctx is not None
        assert self._daemon is not None
        app = create_app(self.ctx)
        _silence_access_log()
        config = uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="off", http="h11", ws="websockets-sansio",
            server_header=False, date_header=True, timeout_graceful_shutdown=int(_GRACE_S),
            ws_max_size=1 << 20, ws_ping_interval=20.0, ws_ping_timeout=20.0, timeout_keep_alive=30,
            ws_per_message_deflate=False,  # zlib per frame cost ~40% of the stream CPU for small JSON frames
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="api:uvicorn")
        port = int(sock.getsockname()[1])
        self._daemon.api_port = port
        self._daemon._write_runtime_file()
        log.info("query API listening on %s:%d", sock.getsockname()[0], port)

    async def _stop_server(self) -> None:
        retry, self._retry = self._retry, None
        if retry is not None:
            retry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await retry
        server, task = self._server, self._task
        self._server = self._task = None
        if server is None or task is None:
            return
        server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(task), _GRACE_S + 2.0)
        except TimeoutError:
            server.force_exit = True
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
