"""Run ingestd for tests: in-process (fast, inspectable) or as a real subprocess (signals, kill -9)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import orjson

from adapters.registry import REGISTRY
from ingestd.config.load import IngestdConfig, parse_config
from ingestd.daemon import Daemon
from ingestd.sim.democonfig import toml_value

__all__ = ["DaemonProcess", "config_toml", "make_config", "running_daemon", "scrape"]

ROOT = Path(__file__).resolve().parents[2]


def config_toml(data: Mapping[str, Any]) -> str:
    """Serialise a config dict to TOML (tables inline where nested; enough for tests)."""
    def is_table_array(v: Any) -> bool:
        return isinstance(v, list) and bool(v) and isinstance(v[0], dict)

    # plain keys first: anything written after a [table] header would belong to that table
    lines: list[str] = [f"{k} = {toml_value(v)}" for k, v in data.items()
                        if not isinstance(v, dict) and not is_table_array(v)]
    for key, val in data.items():
        if isinstance(val, dict):
            lines += ["", f"[{key}]", *(f"{k} = {toml_value(v)}" for k, v in val.items())]
        elif is_table_array(val):
            for item in val:
                lines += ["", f"[[{key}]]", *(f"{k} = {toml_value(v)}" for k, v in item.items())]
    return "\n".join(lines) + "\n"


def make_config(*, state_dir: Path | str, tenants: list[dict[str, Any]], sources: list[dict[str, Any]] = (),  # type: ignore[assignment]
                **sections: Any) -> dict[str, Any]:
    daemon = {"state_dir": str(state_dir), "metrics_listen": "127.0.0.1:0", "shutdown_timeout": 15.0}
    daemon.update(sections.pop("daemon", {}))
    api: dict[str, Any] = {"listen": "127.0.0.1:0"}  # never a fixed port in tests
    api.update(sections.pop("api", {}))
    cfg: dict[str, Any] = {"daemon": daemon, "api": api, "tenants": tenants, "sources": list(sources)}
    cfg.update(sections)
    return cfg


def parse(cfg: Mapping[str, Any]) -> IngestdConfig:
    return parse_config(cfg, REGISTRY)


async def wait_sources_up(d: Daemon, timeout: float = 30) -> None:
    """Wait until every enabled source has reported itself connected (status up)."""
    from .wait import eventually

    await eventually(lambda: all(h.device_up.get("") for h in d.sources.values()), timeout=timeout,
                     interval=0.02, what="sources connected")


@contextlib.asynccontextmanager
async def running_daemon(cfg: Mapping[str, Any] | IngestdConfig, *, wait_sources: bool = True,
                         **kwargs: Any) -> AsyncIterator[Daemon]:
    """Start a Daemon in this event loop (waiting for its sources to connect unless told not to);
    stop it (SIGTERM path: flush) on exit."""
    parsed = cfg if isinstance(cfg, IngestdConfig) else parse(cfg)
    d = Daemon(parsed, REGISTRY, **kwargs)
    task = asyncio.create_task(d.run(), name="daemon")
    ready = asyncio.create_task(d.ready.wait())
    done, _ = await asyncio.wait({task, ready}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        ready.cancel()
        task.result()
        raise RuntimeError("daemon stopped before becoming ready")
    if ready not in done:
        task.cancel()
        raise TimeoutError("daemon did not become ready")
    try:
        if wait_sources:
            await wait_sources_up(d)
        yield d
    finally:
        d.request_stop()
        await asyncio.wait_for(task, 60)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return str(r.read().decode())


class DaemonProcess:
    """``ingestd run -c FILE`` as a child process."""

    def __init__(self, cfg: Mapping[str, Any], *, env: Mapping[str, str] | None = None,
                 workdir: Path | None = None) -> None:
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="ingestd-proc-"))
        self.config_path = self.workdir / "ingestd.toml"
        self.config_path.write_text(config_toml(cfg))
        self.state_dir = Path(cfg["daemon"]["state_dir"])
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / "ingestd.log"

    def write_config(self, cfg: Mapping[str, Any]) -> None:
        self.config_path.write_text(config_toml(cfg))

    def start(self, timeout: float = 60) -> dict[str, Any]:
        runtime = self.state_dir / "runtime.json"
        runtime.unlink(missing_ok=True)
        with self.log_path.open("ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ingestd", "run", "-c", str(self.config_path)],
                stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT, start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ingestd exited with {self.proc.returncode}:\n{self.log_tail()}")
            if runtime.exists():
                info: dict[str, Any] = orjson.loads(runtime.read_bytes())
                if info.get("pid") == self.proc.pid:
                    self.runtime = info
                    return info
            time.sleep(0.05)  # readiness polling of a child process
        raise TimeoutError(f"ingestd did not become ready:\n{self.log_tail()}")

    def metrics(self) -> str:
        return scrape(int(self.runtime["metrics_port"]))

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def terminate(self, timeout: float = 60) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        self.proc = None
        return rc

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def log_tail(self, n: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""
