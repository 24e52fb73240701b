"""The demo's local servers: PostgreSQL (+ TimescaleDB when installed) and Mosquitto, in a work directory.

Never the system services: each server is a child process of ``ingestd demo`` with its data under the
work directory (kept between runs, so a second ``make demo`` starts in seconds and keeps its history).
Children get a parent-death signal, so even a ``kill -9`` of the demo leaves no orphan server behind.
PostgreSQL refuses to run as root: as root the server runs as the ``postgres`` system user.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["LocalMosquitto", "LocalPostgres", "ServiceError", "free_port", "spawn"]

_PR_SET_PDEATHSIG = 1


class ServiceError(RuntimeError):
    """A local server could not be set up or started; the message says what to do."""


def free_port(preferred: int = 0, host: str = "127.0.0.1") -> int:
    """``preferred`` when it can be bound, else a free port chosen by the kernel."""
    for port in ((preferred, 0) if preferred else (0,)):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise ServiceError("no free TCP port")


def _die_with_parent(sig: int) -> None:
    """In the child between fork and exec: get ``sig`` when the demo process dies (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)


def spawn(argv: Sequence[str], log: Path, *, user: str | None = None, death_signal: int = signal.SIGTERM,
          env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start a child in its own session (Ctrl-C reaches only the demo, which stops children in order)."""
    with log.open("ab") as out:
        return subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, user=user, env=env, cwd=cwd,
                                start_new_session=True, preexec_fn=lambda: _die_with_parent(death_signal))


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> None:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _tail(path: Path, n: int = 1500) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else ""


def find_pg_bin() -> Path:
    env = os.environ.get("INGESTD_PG_BIN")
    if env:
        return Path(env)
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True)
    for b in found:
        if Path(f"/usr/share/postgresql/{b.parent.name}/extension/timescaledb.control").exists():
            return b
    if found:
        return found[0]
    raise ServiceError("no PostgreSQL server under /usr/lib/postgresql: run `make setup` (scripts/setup.sh)")


class LocalPostgres:
    def __init__(self, root: Path, port: int) -> None:
        self.bindir = find_pg_bin()
        self.timescaledb = Path(f"/usr/share/postgresql/{self.bindir.parent.name}/extension/"
                                "timescaledb.control").exists()
        self.user = self._run_as()
        self.root = self._usable_root(root)
        self.datadir = self.root / "data"
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def _run_as() -> str | None:
        if os.geteuid() != 0:
            return None
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise ServiceError("running as root needs the 'postgres' system user (installed with postgresql)") \
                from None
        return "postgres"

    def _usable_root(self, root: Path) -> Path:
        """As root, the data directory must be reachable by 'postgres': under a private home directory
        it is not, and a directory in the temporary area is used instead."""
        root.mkdir(parents=True, exist_ok=True)
        if self.user is None:
            return root
        shutil.chown(root, self.user)
        ok = subprocess.run(["test", "-w", str(root)], user=self.user, check=False).returncode == 0
        if ok:
            return root
        digest = hashlib.sha256(str(root).encode()).hexdigest()[:10]
        alt = Path(tempfile.gettempdir()) / f"ingestd-demo-pg-{digest}"
        alt.mkdir(mode=0o700, exist_ok=True)
        shutil.chown(alt, self.user)
        return alt

    def _bin(self, name: str) -> str:
        return str(self.bindir / name)

    def dsn(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def start(self, timeout: float = 60) -> None:
        if not (self.datadir / "PG_VERSION").exists():
            r = subprocess.run([self._bin("initdb"), "-D", str(self.datadir), "-A", "trust", "-U", "postgres",
                                "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"], capture_output=True, text=True,
                               user=self.user, check=False)
            if r.returncode != 0:
                raise ServiceError(f"initdb failed: {r.stderr.strip()[-800:]}")
        sock = self.root / "sock"
        sock.mkdir(exist_ok=True)
        if self.user:
            shutil.chown(sock, self.user)
        (self.datadir / "postmaster.pid").unlink(missing_ok=True)  # left by a killed run; port is ours now
        args = [self._bin("postgres"), "-D", str(self.datadir), "-p", str(self.port), "-k", str(sock),
                "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=100", "-c", "fsync=off",
                "-c", "synchronous_commit=off"]
        if self.timescaledb:
            args += ["-c", "shared_preload_libraries=timescaledb", "-c", "timescaledb.telemetry_level=off"]
        log = self.root / "server.log"
        if self.user:
            log.touch()
            shutil.chown(log, self.user)
        # SIGINT is PostgreSQL's "fast shutdown": sent to it if the demo dies without stopping it
        self.proc = spawn(args, log, user=self.user, death_signal=signal.SIGINT)
        deadline = time.monotonic() + timeout
        while subprocess.run([self._bin("pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
                             check=False).returncode != 0:
            if self.proc.poll() is not None:
                raise ServiceError(f"postgres exited with {self.proc.returncode}: {_tail(log)}")
            if time.monotonic() > deadline:
                raise ServiceError(f"postgres did not accept connections within {timeout:g}s: {_tail(log)}")
            time.sleep(0.1)  # readiness polling of a child process

    def psql(self, sql: str, db: str = "postgres") -> str:
        r = subprocess.run([self._bin("psql"), "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                            "-p", str(self.port), "-U", "postgres", "-d", db, "-c", sql],
                           capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise ServiceError(f"psql: {r.stderr.strip()}")
        return r.stdout.strip()

    def ensure_database(self, name: str) -> None:
        if not self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'"):
            self.psql(f'CREATE DATABASE "{name}"')

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            _wait(self.proc, 30)
        self.proc = None


class LocalMosquitto:
    def __init__(self, root: Path, port: int) -> None:
        if shutil.which("mosquitto") is None:
            raise ServiceError("mosquitto is not installed: run `make setup` (scripts/setup.sh)")
        self.root = root
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        conf = self.root / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", "persistence true",
                 f"persistence_location {self.root}/", "max_queued_messages 100000", "max_inflight_messages 0",
                 "log_dest stderr", "log_type error", "log_type warning"]
        if os.geteuid() == 0:
            lines.append("user root")
        conf.write_text("\n".join(lines) + "\n")
        log = self.root / "broker.log"
        self.proc = spawn(["mosquitto", "-c", str(conf)], log)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise ServiceError(f"mosquitto exited with {self.proc.returncode}: {_tail(log)}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            if time.monotonic() > deadline:
                raise ServiceError("mosquitto did not start listening")
            time.sleep(0.05)  # readiness polling of a child process

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            _wait(self.proc, 10)
        self.proc = None
