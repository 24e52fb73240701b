"""Real PostgreSQL/TimescaleDB servers for tests: initdb into a temporary directory, start on a
free port, create databases, stop/kill/restart for outage drills. Never uses system services."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

from .ports import free_port

__all__ = ["PgServer", "find_pg_bin", "timescaledb_available"]


def find_pg_bin() -> Path:
    env = os.environ.get("INGESTD_PG_BIN")
    if env:
        return Path(env)
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True)
    for c in candidates:
        if timescaledb_available(c):
            return c
    if candidates:
        return candidates[0]
    raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql (run scripts/setup.sh)")


def timescaledb_available(bindir: Path) -> bool:
    return Path(f"/usr/share/postgresql/{bindir.parent.name}/extension/timescaledb.control").exists()


def _run_as() -> str | None:
    """PostgreSQL refuses to run as root: use the 'postgres' system user then."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise RuntimeError("running as root needs the 'postgres' user (installed with postgresql)") from exc
    return "postgres"


class PgServer:
    def __init__(self, *, timescaledb: bool = True, bindir: Path | None = None, fsync: bool = False,
                 extra: dict[str, str] | None = None) -> None:
        self.bindir = bindir or find_pg_bin()
        self.timescaledb = timescaledb and timescaledb_available(self.bindir)
        self.user = _run_as()
        self.root = Path(tempfile.mkdtemp(prefix="ingestd-pg-"))
        self.datadir = self.root / "data"
        self.sockdir = self.root / "sock"
        self.sockdir.mkdir()
        self.port = free_port()
        self.fsync = fsync
        self.extra = extra or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.start_dsn_check = True
        if self.user:
            shutil.chown(self.root, self.user)
            shutil.chown(self.sockdir, self.user)
        self._initdb()

    def _initdb(self) -> None:
        subprocess.run(
            [str(self.bindir / "initdb"), "-D", str(self.datadir), "-A", "trust", "-U", "postgres", "-E", "UTF8",
             "--no-sync", "--locale=C.UTF-8"],
            check=True, capture_output=True, user=self.user,
        )

    @property
    def dsn_base(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}"

    def dsn(self, db: str = "postgres") -> str:
        return f"{self.dsn_base}/{db}"

    def start(self, timeout: float = 30) -> None:
        args = [str(self.bindir / "postgres"), "-D", str(self.datadir), "-p", str(self.port), "-k", str(self.sockdir),
                "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200", "-c", "shared_buffers=256MB",
                "-c", "max_locks_per_transaction=256"]
        if not self.fsync:
            args += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        if self.timescaledb:
            args += ["-c", "shared_preload_libraries=timescaledb", "-c", "timescaledb.telemetry_level=off",
                     "-c", "timescaledb.max_background_workers=2"]
        for k, v in self.extra.items():
            args += ["-c", f"{k}={v}"]
        with (self.root / "server.log").open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, user=self.user,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                target = self.dsn() if self.start_dsn_check else f"host={self.sockdir} port={self.port} user=postgres"
                with psycopg.connect(target, connect_timeout=2) as c:
                    c.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)  # readiness polling of an external process

    def log_tail(self, n: int = 2000) -> str:
        p = self.root / "server.log"
        return p.read_text(errors="replace")[-n:] if p.exists() else ""

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: clean; ``immediate``: like a crash)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            subprocess.run([str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "-t", "30",
                            "stop"], check=False, capture_output=True, user=self.user)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(30)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def execute(self, sql: str, db: str = "postgres") -> list[tuple[object, ...]]:
        with psycopg.connect(self.dsn(db), autocommit=True) as c:
            cur = c.execute(sql)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []

    def create_database(self, name: str | None = None) -> str:
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        self.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
