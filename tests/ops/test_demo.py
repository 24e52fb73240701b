"""``ingestd demo`` for real: local PostgreSQL/TimescaleDB and Mosquitto, the simulated field on every
registered protocol, the daemon and its API; it stops everything on Ctrl-C and leaves no orphan even
when it is killed."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from adapters.registry import REGISTRY
from ingestd.config.load import load_config
from ingestd.sim.democonfig import DemoPorts, demo_config
from ingestd.sim.layout import PROTOCOL_ORDER, Layout
from tests.support.daemon import ROOT

PROTOCOLS = [p for p in PROTOCOL_ORDER if p in REGISTRY]


def demo_argv(workdir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ingestd", "demo", "--workdir", str(workdir), "--wells", "8",
            "--api-port", "0", "--metrics-port", "0", *extra]


def leftovers(workdir: Path) -> list[str]:
    """Live processes whose command line mentions the work directory (postgres, mosquitto, ingestd, …)."""
    out = []
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if str(workdir) in cmd and p.info["status"] != psutil.STATUS_ZOMBIE and p.pid != psutil.Process().pid:
            out.append(f"{p.pid} {cmd[:120]}")
    return out


def wait_gone(workdir: Path, timeout: float = 30) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := leftovers(workdir)) and time.monotonic() < deadline:
        time.sleep(0.1)  # polling the process table
    return left


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "demo"
    yield d
    for line in leftovers(d):  # never leave servers behind, even when a test fails
        psutil.Process(int(line.split()[0])).kill()


def test_short_demo_delivers_data_on_every_registered_protocol(workdir: Path) -> None:
    r = subprocess.run(demo_argv(workdir, "--duration", "8"), capture_output=True, text=True, cwd=ROOT,
                       timeout=110, check=False)
    out = r.stdout
    assert r.returncode == 0, out + r.stderr + (workdir / "ingestd.log").read_text(errors="replace")[-3000:]
    assert "Ready." in out and "demo stopped." in out
    for proto in PROTOCOLS:
        assert f"field-{proto}" in out, proto
    assert "FAILED" not in out
    token = (workdir / "api_token").read_text().strip()
    assert token in out and "curl -s -H" in out and "/v1/tenants/demo/latest" in out
    assert wait_gone(workdir) == []


def test_ctrl_c_stops_every_child(workdir: Path) -> None:
    proc = subprocess.Popen(demo_argv(workdir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=ROOT, start_new_session=True)
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:  # blocking read of the demo's own output until it says it is ready
            lines.append(line)
            if "Ctrl-C stops everything" in line:
                break
        info = json.loads((workdir / "demo.json").read_text())
        pids = [pid for pid in info["pids"].values() if pid]
        assert len(pids) == 4 and all(psutil.pid_exists(p) for p in pids), "".join(lines)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, "".join(lines) + rest
    assert "demo stopped." in rest
    assert wait_gone(workdir, timeout=5) == []
    assert "ingestd stopped" in (workdir / "ingestd.log").read_text(), "ingestd was stopped cleanly (flushed)"


def test_killed_demo_leaves_no_orphan_servers(workdir: Path) -> None:
    proc = subprocess.Popen(demo_argv(workdir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=ROOT, start_new_session=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "Ctrl-C stops everything" in line:
                break
        proc.kill()  # no chance to clean up: the children's parent-death signal must do it
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert wait_gone(workdir) == []


@pytest.mark.parametrize("protocols", [["mqtt"], PROTOCOLS])
def test_demo_config_follows_the_registry(tmp_path: Path, protocols: list[str]) -> None:
    """Only registered adapters get sources (the demo works with MQTT alone); the file validates."""
    ports = DemoPorts(postgres=5432, mqtt=1883, modbus=5020, opcua=4840, api=8080, metrics=9108)
    path = tmp_path / "ingestd.toml"
    path.write_text(demo_config(workdir=str(tmp_path), ports=ports, protocols=protocols, wells=20,
                                token="igd_demo_x", alarms=True))
    cfg = load_config(path, REGISTRY)
    assert [s.protocol for s in cfg.sources] == [p for p in PROTOCOL_ORDER if p in protocols]
    layout = Layout.of(20, protocols)
    assert sum(len(s.tags) for s in cfg.sources) == 20 * 6
    for s in cfg.sources:
        wells = {t.name.split(".")[0] for t in s.tags}
        assert wells == {f"well_{n:02d}" for n in layout.wells_of(s.protocol)}
    assert {r.name for r in cfg.alarms.rules} >= {"casing_pressure_high", "comm_loss"}
