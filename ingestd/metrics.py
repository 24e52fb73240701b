"""Prometheus metrics of one ingestd process (DESIGN §8) and a tiny asyncio /metrics server.

Each :class:`Metrics` owns its CollectorRegistry, so several daemons can run in one test process.
Label values are tenant slugs, source names, reasons — never secrets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["BREAKER_STATES", "Metrics", "MetricsServer"]

log = logging.getLogger(__name__)

BREAKER_STATES = {"closed": 0, "half-open": 1, "open": 2}

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2.5, 5, 10, 30, 60)
_ROW_BUCKETS = (1, 10, 50, 100, 500, 1000, 2500, 5000, 10000, 50000, 100000)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.points_received = Counter("ingestd_points_received_total", "Readings received from sources",
                                       ["tenant", "source"], registry=r)
        self.points_written = Counter("ingestd_points_written_total", "Readings committed to the tenant database",
                                      ["tenant", "source"], registry=r)
        self.points_dropped = Counter("ingestd_points_dropped_total", "Readings dropped, by reason",
                                      ["tenant", "source", "reason"], registry=r)
        self.points_filtered = Counter("ingestd_points_filtered_total",
                                       "Readings not stored because of deadband (report by exception)",
                                       ["tenant", "source"], registry=r)
        self.points_duplicate = Counter("ingestd_points_duplicate_total",
                                        "Readings already in the database (replays, redeliveries)", ["tenant"],
                                        registry=r)
        self.points_spooled = Counter("ingestd_points_spooled_total", "Readings written to the disk spool",
                                      ["tenant"], registry=r)
        self.points_replayed = Counter("ingestd_points_replayed_total", "Readings replayed from the spool",
                                       ["tenant"], registry=r)
        self.batch_rows = Histogram("ingestd_batch_rows", "Rows per database write", ["tenant"],
                                    buckets=_ROW_BUCKETS, registry=r)
        self.write_seconds = Histogram("ingestd_write_seconds", "Duration of one batch write (COPY transaction)",
                                       ["tenant"], buckets=_LATENCY_BUCKETS, registry=r)
        self.ingest_latency = Histogram("ingestd_ingest_latency_seconds",
                                        "Receive → commit latency per batch", ["tenant"],
                                        buckets=_LATENCY_BUCKETS, registry=r)
        self.inbox_rows = Gauge("ingestd_inbox_rows", "Rows waiting in the tenant inbox", ["tenant"], registry=r)
        self.inbox_capacity = Gauge("ingestd_inbox_capacity_rows", "Inbox bound (rows)", ["tenant"], registry=r)
        self.inbox_waiting = Gauge("ingestd_inbox_blocked_producers", "Sources waiting for inbox space",
                                   ["tenant"], registry=r)
        self.spool_bytes = Gauge("ingestd_spool_bytes", "Bytes in the tenant's disk spool", ["tenant"], registry=r)
        self.spool_rows = Gauge("ingestd_spool_rows", "Readings in the tenant's disk spool", ["tenant"], registry=r)
        self.spool_dropped = Counter("ingestd_spool_dropped_points_total",
                                     "Readings dropped because the spool was full", ["tenant"], registry=r)
        self.storage_tier = Gauge("ingestd_storage_tier",
                                  "Storage tier: 1 timescale license, 2 TimescaleDB Apache, 3 plain PostgreSQL",
                                  ["tenant", "tier"], registry=r)
        self.db_up = Gauge("ingestd_tenant_db_up", "1 when the tenant database accepts writes", ["tenant"],
                           registry=r)
        self.breaker_state = Gauge("ingestd_breaker_state", "Circuit breaker: 0 closed, 1 half-open, 2 open",
                                   ["kind", "name"], registry=r)
        self.source_up = Gauge("ingestd_source_up", "1 when the source (or device) is connected",
                               ["source", "device"], registry=r)
        self.source_restarts = Counter("ingestd_source_restarts_total", "Source run attempts after a failure",
                                       ["source", "error"], registry=r)
        self.source_events = Counter("ingestd_source_events_total", "Adapter events (polls, overruns, ...)",
                                     ["source", "event"], registry=r)
        self.source_request = Histogram("ingestd_source_request_seconds", "Device request durations",
                                        ["source", "op"], buckets=_LATENCY_BUCKETS, registry=r)
        self.source_gauge = Gauge("ingestd_source_gauge", "Adapter gauges", ["source", "name"], registry=r)
        self.malformed = Counter("ingestd_malformed_total", "Undecodable or unmappable input, by reason",
                                 ["source", "reason"], registry=r)
        self.maintenance_seconds = Histogram("ingestd_maintenance_seconds", "Duration of maintenance jobs",
                                             ["tenant", "job"], buckets=_LATENCY_BUCKETS, registry=r)
        self.maintenance_errors = Counter("ingestd_maintenance_errors_total", "Failed maintenance job runs",
                                          ["tenant", "job"], registry=r)
        self.rollup_lag = Gauge("ingestd_rollup_refresh_lag_seconds",
                                "Age of the oldest ingested data not yet folded into a rollup",
                                ["tenant", "resolution"], registry=r)
        self.dead_letters_dropped = Counter("ingestd_dead_letters_dropped_total",
                                            "Dead letters not kept because the in-memory bound was reached",
                                            ["tenant"], registry=r)
        # store-and-forward (ingestd.spool, ingestd.pipeline.tenant)
        self.spool_oldest_age = Gauge("ingestd_spool_oldest_age_seconds",
                                      "Age of the oldest reading waiting in the spool (0 when empty)", ["tenant"],
                                      registry=r)
        self.spool_bad_records = Counter("ingestd_spool_bad_records_total",
                                         "Spool records skipped on recovery/replay: torn (kill -9) or corrupt",
                                         ["tenant", "kind"], registry=r)
        self.spool_quarantined = Counter("ingestd_spool_quarantined_points_total",
                                         "Spooled readings the database rejected permanently, moved to quarantine/",
                                         ["tenant"], registry=r)
        self.spool_errors = Counter("ingestd_spool_errors_total", "Failed spool appends (disk full, I/O error)",
                                    ["tenant"], registry=r)
        self.write_stalls = Counter("ingestd_write_stalls_total",
                                    "Database writes that exceeded the durability deadline (their data was spooled)",
                                    ["tenant"], registry=r)
        self.writer_held_rows = Gauge("ingestd_writer_held_rows",
                                      "Rows held in memory by the tenant writer outside the inbox (in-flight flush)",
                                      ["tenant"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsServer:
    """Minimal HTTP/1.1 server answering ``GET /metrics`` (and ``/healthz``) on the event loop."""

    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        self.metrics = metrics
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
            while (await asyncio.wait_for(reader.readline(), 10)) not in (b"\r\n", b"\n", b""):
                pass
            parts = line.decode("latin-1").split()
            path = parts[1] if len(parts) > 1 else ""
            if parts[:1] == ["GET"] and path.split("?")[0] == "/metrics":
                body, status, ctype = self.metrics.render(), "200 OK", CONTENT_TYPE_LATEST
            elif parts[:1] == ["GET"] and path == "/healthz":
                body, status, ctype = b"ok\n", "200 OK", "text/plain"
            else:
                body, status, ctype = b"not found\n", "404 Not Found", "text/plain"
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                         f"Connection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
