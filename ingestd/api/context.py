"""What every route needs: the daemon, the options, the token index, API-side database pools.

The API reads tenant databases through its *own* small pool per tenant (``application_name``
``ingestd-api:<instance>``), never the writer's: a burst of dashboard queries or a slow export
must not delay a batch commit. The pools are lazy and idle connections close on their own.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ..config.load import IngestdConfig
from ..pipeline.tenant import TenantPipeline
from ..storage.pool import TenantDb
from ..storage.queries import rollup_relations
from .errors import ApiError

if TYPE_CHECKING:
    from fastapi import FastAPI

    from ..daemon import Daemon
    from .alarm_service import AlarmService
    from .security import TokenIndex
    from .stream import StreamHub

__all__ = ["ApiContext", "ApiMetrics", "ApiOptions"]

_ROLLUP_TTL_S: Final = 60.0
_LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


@dataclass(frozen=True, slots=True)
class ApiOptions:
    """Settings of the API, from ``[api]`` plus operational knobs of :class:`~ingestd.api.server.ApiExtension`."""

    base_host: str | None = None
    """Host of ``api.public_url``: ``<tenant>.<base_host>`` names a tenant."""
    tenant_from_host: bool = True
    metrics_auth: Literal["admin", "open"] = "admin"
    """``/metrics``: an admin token (series filtered to its tenant) or open (private scrape network)."""
    ws_queue: int = 256
    """Messages buffered per WebSocket client before the oldest are dropped."""
    ws_max_clients: int = 2000
    ws_flush_interval: float = 0.02
    """Live values are fanned out at most this often (seconds); bounds messages per client."""
    raw_cap: int = 500_000
    """Most raw rows a series request fetches to downsample in NumPy; beyond, SQL aggregates."""
    export_chunk: int = 20_000
    """Rows per keyset page of an export."""


class ApiMetrics:
    """The API's own series, registered once in the daemon's registry."""

    _by_registry: ClassVar[weakref.WeakKeyDictionary[CollectorRegistry, ApiMetrics]] = weakref.WeakKeyDictionary()

    def __init__(self, r: CollectorRegistry) -> None:
        self.requests = Counter("ingestd_api_requests_total", "Query API requests by route and status",
                                ["route", "status"], registry=r)
        self.seconds = Histogram("ingestd_api_request_seconds", "Query API request duration (until the "
                                 "response starts)", ["route"], buckets=_LATENCY_BUCKETS, registry=r)
        self.ws_clients = Gauge("ingestd_api_ws_clients", "Connected WebSocket stream clients", ["tenant"],
                                registry=r)
        self.ws_dropped = Counter("ingestd_api_ws_dropped_messages_total",
                                  "Stream messages dropped for slow WebSocket clients", ["tenant"], registry=r)
        self.ws_sent = Counter("ingestd_api_ws_points_total", "Live values sent to WebSocket clients", ["tenant"],
                               registry=r)

    @classmethod
    def of(cls, registry: CollectorRegistry) -> ApiMetrics:
        m = cls._by_registry.get(registry)
        if m is None:
            m = cls._by_registry[registry] = cls(registry)
        return m


class ApiContext:
    def __init__(self, daemon: Daemon, options: ApiOptions, tokens: TokenIndex, hub: StreamHub) -> None:
        self.daemon = daemon
        self.options = options
        self.tokens = tokens
        self.hub = hub
        self.metrics = ApiMetrics.of(daemon.metrics.registry)
        self._dbs: dict[str, TenantDb] = {}
        self._db_cfg: dict[str, tuple[Any, Any]] = {}
        self._rollups: dict[str, tuple[float, frozenset[str]]] = {}
        self.started_at = time.time()

    @staticmethod
    def of(app: FastAPI | Any) -> ApiContext:
        ctx = app.state.ingestd
        assert isinstance(ctx, ApiContext)
        return ctx

    # ------------------------------------------------------------------ tenants and pools
    def pipeline(self, slug: str) -> TenantPipeline:
        tp = self.daemon.tenants.get(slug)
        if tp is None:
            raise ApiError(404, "tenant not found", parameter="tenant")
        return tp

    def db(self, slug: str) -> TenantDb:
        db = self._dbs.get(slug)
        if db is None:
            cfg = self.pipeline(slug).cfg
            db = self._dbs[slug] = TenantDb(slug, cfg.dsn, cfg.pool,
                                            application_name=f"ingestd-api:{self.daemon.instance}")
            self._db_cfg[slug] = (cfg.dsn, cfg.pool)
        return db

    async def rollups(self, slug: str, conn: Any) -> frozenset[str]:
        """Rollup resolutions present in the tenant database (re-checked every minute, so rollups
        created by a later migration are picked up without a restart). ``conn``: the request's
        connection (a second one from the same small pool could wait for itself)."""
        hit = self._rollups.get(slug)
        now = time.monotonic()
        if hit is not None and now - hit[0] < _ROLLUP_TTL_S:
            return hit[1]
        found = await rollup_relations(conn)
        self._rollups[slug] = (now, found)
        return found

    @property
    def alarms(self) -> AlarmService:
        svc: AlarmService | None = getattr(self.daemon, "alarm_service", None)
        if svc is None:
            raise ApiError(503, "the alarm engine is not running", headers={"Retry-After": "30"})
        return svc

    # ------------------------------------------------------------------ lifecycle
    async def reconfigure(self, cfg: IngestdConfig, options: ApiOptions, tokens: TokenIndex) -> None:
        """New config: new tokens/options at once; pools of changed or removed tenants are closed."""
        self.options = options
        self.tokens = tokens
        wanted = {t.slug: (t.dsn, t.pool) for t in cfg.tenants}
        stale = [self._dbs.pop(slug) for slug in list(self._dbs) if wanted.get(slug) != self._db_cfg.get(slug)]
        self._rollups.clear()
        await asyncio.gather(*(db.close() for db in stale))

    async def close(self) -> None:
        dbs, self._dbs = list(self._dbs.values()), {}
        await asyncio.gather(*(db.close() for db in dbs))
