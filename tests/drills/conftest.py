"""Fixtures of the fault drills: a PostgreSQL/TimescaleDB server of the drill's own (to stop, kill,
freeze), and helpers to start ingestd as a real subprocess."""

from __future__ import annotations

import contextlib
import signal

# Imported up front: pytest's unraisable hook imports tracemalloc lazily, and a ResourceWarning collected
# *during* that import (log handles leaked by the server fixtures) then fails the test with a circular import.
import tracemalloc  # noqa: F401
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.support.daemon import DaemonProcess, make_config
from tests.support.mosquitto import Mosquitto
from tests.support.pg import PgServer

from .support import mqtt_source


@dataclass
class DrillDb:
    server: PgServer
    name: str

    @property
    def dsn(self) -> str:
        return self.server.dsn(self.name)

    def count(self) -> int:
        try:
            return int(self.server.execute("SELECT count(*) FROM readings", self.name)[0][0])  # type: ignore[call-overload]
        except Exception:  # down, starting, or not migrated yet
            return -1

    def _processes(self) -> list[psutil.Process]:
        assert self.server.proc is not None
        postmaster = psutil.Process(self.server.proc.pid)
        return [postmaster, *postmaster.children(recursive=True)]  # backends call setsid(): no common group

    def freeze(self) -> None:
        """SIGSTOP the whole server: connections stay open but nothing answers (a hung database)."""
        self._frozen = self._processes()
        for p in self._frozen:
            p.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        for p in getattr(self, "_frozen", []):
            with contextlib.suppress(psutil.Error):
                p.send_signal(signal.SIGCONT)
        self._frozen = []


@pytest.fixture
def drill_db() -> Iterator[DrillDb]:
    """A server of this drill only, with one tenant database. fsync and synchronous commit are on:
    the drills crash it (``immediate`` stop) and a commit it acknowledged must survive that."""
    pg = PgServer(timescaledb=True, fsync=True)
    pg.start()
    db = DrillDb(pg, pg.create_database())
    yield db
    with contextlib.suppress(OSError):
        db.thaw()
    pg.close()


def drill_config(state_dir: Path, tenants: list[dict[str, Any]], broker: Mosquitto, prefix: str,
                 source: dict[str, Any] | None = None, **sections: Any) -> dict[str, Any]:
    daemon = {"log_level": "info", **sections.pop("daemon", {})}
    for t in tenants:
        t.setdefault("pool", {"connect_timeout": "2s"})
    src = mqtt_source(broker, prefix, **({"tenant": tenants[0]["slug"]} if len(tenants) > 1 else {}))
    src.update(source or {})
    cfg = make_config(state_dir=state_dir, tenants=tenants, sources=[src], daemon=daemon, **sections)
    cfg.setdefault("api", {"listen": "127.0.0.1:0"})  # never the fixed default port: drills may overlap
    return cfg


@contextlib.contextmanager
def daemon_process(cfg: dict[str, Any]) -> Iterator[DaemonProcess]:
    proc = DaemonProcess(cfg)
    proc.start()
    try:
        yield proc
    finally:
        if proc.proc is not None and proc.proc.poll() is None:
            try:
                proc.terminate(60)
            finally:
                proc.kill()


@pytest.fixture
def prefix() -> str:
    return f"d{uuid.uuid4().hex[:8]}"
