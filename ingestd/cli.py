"""Command line: ``ingestd run | check-config | migrate | browse | demo | token``.

Exit codes: 0 success, 1 runtime failure, 2 invalid configuration or usage (the systemd unit sets
``RestartPreventExitStatus=2`` so a broken config file does not restart-loop).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from adapters.registry import REGISTRY

from . import __version__
from .config.load import IngestdConfig, load_config, warnings
from .errors import ConfigError, StorageError
from .logs import setup_logging

__all__ = ["main"]

log = logging.getLogger("ingestd")


def _load(path: str) -> IngestdConfig:
    """Load, validate and cross-check a config file (raises ConfigError with every problem)."""
    from .reload import config_problems

    cfg = load_config(Path(path), REGISTRY)
    problems = config_problems(cfg)
    if problems:
        raise ConfigError(problems, file=path)
    return cfg


def _load_or_report(path: str) -> IngestdConfig | None:
    """The validated configuration, or None after printing every problem (the caller exits 2)."""
    try:
        return _load(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = _load_or_report(args.config)
    if cfg is None:
        return 2
    tags_by_proto: Counter[str] = Counter()
    sources_by_proto: Counter[str] = Counter()
    for s in cfg.sources:
        sources_by_proto[s.protocol] += 1
        tags_by_proto[s.protocol] += len(s.tags)
    print(f"{args.config}: configuration OK")
    print(f"  tenants: {len(cfg.tenants)} ({', '.join(t.slug for t in cfg.tenants)})")
    print(f"  sources: {len(cfg.sources)}")
    for proto in sorted(sources_by_proto):
        print(f"    {proto:10s} {sources_by_proto[proto]:4d} source(s) {tags_by_proto[proto]:6d} configured tag(s)")
    extra = getattr(cfg.alarms, "summary", None)
    if callable(extra):
        print(f"  alarms: {extra()}")
    from .leases import needs_lease

    leased = [s.name for s in cfg.sources if s.enabled and needs_lease(s, cfg.coordination)]
    if leased:
        print(f"  leased through the coordination database: {', '.join(leased)}")
    findings = warnings(cfg) + cfg.alarms.warnings([t.slug for t in cfg.tenants])
    if findings:
        print(f"  {len(findings)} warning(s):")
        for w in findings:
            print(f"    {w}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    cfg = _load_or_report(args.config)
    if cfg is None:
        return 2
    d = cfg.daemon
    setup_logging(args.log_format or d.log_format, args.log_level or d.log_level, d.log_levels)
    from .daemon import Daemon
    from .extensions import default_extensions

    async def main() -> None:
        daemon = Daemon(cfg, REGISTRY, config_path=Path(args.config), extensions=default_extensions(cfg))
        await daemon.run()

    try:
        asyncio.run(main())
    except OSError as exc:  # e.g. the metrics or API port is taken: say so without a traceback
        log.critical("ingestd cannot start: %s", exc)
        return 1
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    cfg = _load_or_report(args.config)
    if cfg is None:
        return 2
    setup_logging("text", "warning")
    from .storage.migrate import migrate
    from .storage.pool import TenantDb

    tenants = [t for t in cfg.tenants if args.tenant in (None, t.slug)]
    if not tenants:
        print(f"unknown tenant {args.tenant!r}", file=sys.stderr)
        return 2

    async def run() -> int:
        failed = 0
        for t in tenants:
            db = TenantDb(t.slug, t.dsn, t.pool, application_name="ingestd-migrate")
            try:
                async with db.connection() as conn:
                    report = await migrate(conn, t.storage)
                print(f"{t.slug}: {report.describe()}")
            except StorageError as exc:
                print(f"{t.slug}: FAILED: {exc}", file=sys.stderr)
                failed += 1
            finally:
                await db.close()
        return 1 if failed else 0

    return asyncio.run(run())


def cmd_browse(args: argparse.Namespace) -> int:
    try:
        module = importlib.import_module("adapters.opcua.browse")
    except ImportError:
        print("the OPC UA adapter is not available", file=sys.stderr)
        return 2
    return int(module.browse_cli(args))


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        module = importlib.import_module("ingestd.demo")
    except ImportError:
        print("the demo is not available in this build", file=sys.stderr)
        return 2
    return int(module.run_demo(args))


def cmd_token(args: argparse.Namespace) -> int:
    from .auth import hash_token, new_token

    if args.action == "new":
        token = new_token(args.tenant)
        print(f"token: {token}")
        print(f"hash:  {hash_token(token)}")
    else:
        print(hash_token(sys.stdin.readline().strip() if args.token == "-" else args.token))  # noqa: S105
    return 0


def cmd_dead_letters(args: argparse.Namespace) -> int:
    cfg = _load_or_report(args.config)
    if cfg is None:
        return 2
    setup_logging("text", "warning")
    from .deadletters import run_listing

    return run_listing(cfg, args)


def cmd_rollups(args: argparse.Namespace) -> int:
    """``ingestd rollups rebuild``: recompute rollups from raw data (data older than the batch ledger,
    rollups enabled on an existing tenant, repairs), one day per transaction."""
    cfg = _load_or_report(args.config)
    if cfg is None:
        return 2
    setup_logging("text", "warning")
    import datetime as dt

    from .model import now_us
    from .storage.migrate import migrate
    from .storage.pool import TenantDb
    from .storage.rollups import rebuild_rollups

    try:
        tenant = cfg.tenant(args.tenant)
    except KeyError:
        print(f"unknown tenant {args.tenant!r}", file=sys.stderr)
        return 2
    try:
        start = dt.datetime.fromisoformat(args.start)
        end = dt.datetime.fromisoformat(args.end) if args.end else dt.datetime.now(dt.UTC)
    except ValueError as exc:
        print(f"--from/--to: {exc}", file=sys.stderr)
        return 2
    start, end = (t if t.tzinfo else t.replace(tzinfo=dt.UTC) for t in (start, end))
    if end <= start:
        print("--to must be after --from", file=sys.stderr)
        return 2
    day = 86_400_000_000

    async def run() -> int:
        db = TenantDb(tenant.slug, tenant.dsn, tenant.pool, application_name="ingestd-rollups")
        try:
            lo, hi = int(start.timestamp() * 1e6), int(end.timestamp() * 1e6)
            total: dict[str, int] = {}
            async with db.connection() as conn:
                report = await migrate(conn, tenant.storage)
                while lo < hi:
                    part = await rebuild_rollups(conn, report.tier, tenant, lo, min(lo + day, hi), now_us())
                    for k, v in part.items():
                        total[k] = total.get(k, 0) + v
                    lo += day
            print(f"{tenant.slug}: rebuilt {start.isoformat()} .. {end.isoformat()}: {total}")
            return 0
        except StorageError as exc:
            print(f"{tenant.slug}: FAILED: {exc}", file=sys.stderr)
            return 1
        finally:
            await db.close()

    return asyncio.run(run())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ingestd", description="WellOS SCADA ingestion and alarm engine")
    p.add_argument("--version", action="version", version=f"ingestd {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run the daemon")
    r.add_argument("-c", "--config", required=True)
    r.add_argument("--log-format", choices=["text", "json"], help="override daemon.log_format")
    r.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="override daemon.log_level")
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("check-config", help="validate a configuration file and print a summary")
    c.add_argument("config", nargs="?")
    c.add_argument("-c", "--config", dest="config_opt")
    c.set_defaults(func=cmd_check_config)

    m = sub.add_parser("migrate", help="create/upgrade the schema of tenant databases and report their tier")
    m.add_argument("-c", "--config", required=True)
    m.add_argument("--tenant")
    m.set_defaults(func=cmd_migrate)

    b = sub.add_parser("browse", help="browse an OPC UA server and print a tag config")
    b.add_argument("endpoint")
    b.add_argument("--depth", type=int, default=6)
    b.add_argument("--filter", dest="pattern")
    b.add_argument("--username")
    b.add_argument("--password", help="password or env:/file: reference")
    b.add_argument("--security", default="None", help="e.g. Basic256Sha256,SignAndEncrypt")
    b.add_argument("--cert")
    b.add_argument("--key")
    b.add_argument("--server-cert")
    b.set_defaults(func=cmd_browse)

    d = sub.add_parser("demo", help="local database + simulated well field + daemon + API")
    d.add_argument("--workdir", default=".demo", help="database, broker, state and logs (reused; default .demo)")
    d.add_argument("--wells", type=int, default=20, help="simulated wells (default 20)")
    d.add_argument("--api-port", type=int, default=8080, help="query API port (another free one if taken)")
    d.add_argument("--metrics-port", type=int, default=9108, help="/metrics port (another free one if taken)")
    d.add_argument("--duration", type=float, help="run this many seconds, check that data arrived, stop "
                   "(exit 0 when it did: the CI form of the demo)")
    d.add_argument("--seed", type=int, default=1, help="random seed of the simulated field")
    d.set_defaults(func=cmd_demo)

    t = sub.add_parser("token", help="API bearer tokens")
    t.add_argument("action", choices=["new", "hash"])
    t.add_argument("token", nargs="?", default="-")
    t.add_argument("--tenant", default="")
    t.set_defaults(func=cmd_token)
    from .deadletters import add_arguments as dead_letter_arguments

    dl = sub.add_parser("dead-letters", help="list malformed or unmappable input kept per tenant (newest first)")
    dead_letter_arguments(dl)
    dl.set_defaults(func=cmd_dead_letters)

    ro = sub.add_parser("rollups", help="rollup maintenance")
    ro.add_argument("action", choices=["rebuild"])
    ro.add_argument("-c", "--config", required=True)
    ro.add_argument("--tenant", required=True)
    ro.add_argument("--from", dest="start", required=True, help="ISO 8601 start (UTC unless an offset is given)")
    ro.add_argument("--to", dest="end", help="ISO 8601 end (default: now)")
    ro.set_defaults(func=cmd_rollups)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "check-config":
        args.config = args.config or args.config_opt
        if not args.config:
            print("check-config: give the configuration file", file=sys.stderr)
            return 2
    rc: int = args.func(args)
    return rc
