"""``ingestd dead-letters``: list the malformed or unmappable input each tenant kept (DESIGN §5).

Bounds (where the data lives until it is listed here): at most 1000 dead letters per tenant wait in
memory for the database (more are counted in ``ingestd_dead_letters_dropped_total`` and dropped), and
the table keeps the newest 10,000 rows. Every rejected input is also counted in
``ingestd_malformed_total{source,reason}``, whether or not it was kept.

    ingestd dead-letters -c FILE [--tenant SLUG] [--source NAME] [--reason R] [--limit N]
                         [--format text|json] [--summary]

The CLI wiring is two lines in ``ingestd/cli.py`` (:func:`add_arguments`, :func:`run_listing`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import sys
from collections.abc import Sequence
from typing import TextIO

import orjson

from .config.load import IngestdConfig
from .config.model import TenantConfig
from .errors import StorageError
from .storage.deadletters import DeadLetterRow, list_dead_letters, summarize_dead_letters
from .storage.pool import TenantDb

__all__ = ["add_arguments", "format_row", "run_listing"]

_PREVIEW = 60


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``ingestd dead-letters`` (``-c/--config`` included)."""
    p.add_argument("-c", "--config", required=True)
    p.add_argument("--tenant", help="only this tenant (default: every tenant)")
    p.add_argument("--source", help="only input from this source")
    p.add_argument("--reason", help="only this reason (e.g. bad_json, unknown_topic, oversized)")
    p.add_argument("--limit", type=int, default=50, help="newest N per tenant (1..10000, default 50)")
    p.add_argument("--format", choices=["text", "json"], default="text",
                   help="json: one object per line, payload in base64")
    p.add_argument("--summary", action="store_true", help="counts per source and reason instead of rows")


def _payload_preview(payload: bytes | None) -> str:
    if payload is None:
        return "-"
    text = payload[:_PREVIEW].decode("utf-8", "backslashreplace").replace("\n", "\\n")
    more = "…" if len(payload) > _PREVIEW else ""
    return f"{len(payload)}B {text}{more}"


def format_row(tenant: str, r: DeadLetterRow) -> str:
    detail = r.detail if len(r.detail) <= 120 else r.detail[:119] + "…"
    return (f"{tenant}\t{r.id}\t{r.received_at.isoformat(timespec='milliseconds')}\t{r.source}\t{r.reason}\t"
            f"{detail}\t{_payload_preview(r.payload)}")


def _json_row(tenant: str, r: DeadLetterRow) -> bytes:
    return orjson.dumps({
        "tenant": tenant, "id": r.id, "received_at": r.received_at.isoformat(), "source": r.source,
        "reason": r.reason, "detail": r.detail,
        "payload_b64": base64.b64encode(r.payload).decode() if r.payload is not None else None,
    })


async def _one_tenant(t: TenantConfig, args: argparse.Namespace, out: TextIO) -> None:
    db = TenantDb(t.slug, t.dsn, t.pool, application_name="ingestd-dead-letters")
    try:
        async with db.connection() as conn:
            if args.summary:
                for s in await summarize_dead_letters(conn):
                    if args.format == "json":
                        out.write(orjson.dumps({"tenant": t.slug, "source": s.source, "reason": s.reason,
                                                "count": s.count, "last": s.last.isoformat()}).decode() + "\n")
                    else:
                        out.write(f"{t.slug}\t{s.source}\t{s.reason}\t{s.count}\t{s.last.isoformat()}\n")
                return
            rows = await list_dead_letters(conn, source=args.source, reason=args.reason, limit=args.limit)
        for r in rows:
            out.write((_json_row(t.slug, r).decode() if args.format == "json" else format_row(t.slug, r)) + "\n")
    finally:
        await db.close()


def run_listing(cfg: IngestdConfig, args: argparse.Namespace, *, out: TextIO | None = None,
                err: TextIO | None = None) -> int:
    """Print the dead letters of the selected tenants; 2 on bad arguments, 1 if a database failed."""
    out = out or sys.stdout
    err = err or sys.stderr
    if not 1 <= args.limit <= 10_000:
        err.write("--limit must be between 1 and 10000\n")
        return 2
    tenants: Sequence[TenantConfig] = [t for t in cfg.tenants if args.tenant in (None, t.slug)]
    if not tenants:
        err.write(f"unknown tenant {args.tenant!r}\n")
        return 2
    if args.format == "text" and not args.summary:
        out.write("tenant\tid\treceived_at\tsource\treason\tdetail\tpayload\n")

    async def run() -> int:
        failed = 0
        for t in tenants:
            try:
                await _one_tenant(t, args, out)
            except StorageError as exc:
                err.write(f"{t.slug}: {exc}\n")
                failed += 1
        return 1 if failed else 0

    return asyncio.run(run())
