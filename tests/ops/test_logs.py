"""Logs (DESIGN §8): once per outage, never a secret, JSON lines, levels per module."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from ingestd.logs import JsonFormatter, apply_levels, scrub
from tests.conftest import TenantDb
from tests.integration.test_mqtt_to_db import publish, wait_rows
from tests.ops.helpers import eventually, mqtt
from tests.support.daemon import ROOT, DaemonProcess, make_config, parse, running_daemon
from tests.support.mosquitto import Mosquitto
from tests.support.ports import free_port


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    yield
    apply_levels(logging.getLevelName(level).lower(), {})
    for name in ("ingestd.source.field", "adapters.mqtt"):
        logging.getLogger(name).setLevel(logging.NOTSET)


async def test_one_down_and_one_back_line_per_outage(apache_db: TenantDb, broker: Mosquitto, state_dir: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    p = f"o{uuid.uuid4().hex[:6]}"
    # reconnect fast and never open the breaker: many attempts per outage
    src = mqtt("field", broker, f"{p}/{{well}}/{{tag}}", client_id=f"field-{p}", backoff_initial="20ms",
               backoff_max="100ms", breaker_fail_max=1000, connection={
                   "host": "127.0.0.1", "port": broker.port, "client_id": f"field-{p}", "connect_timeout": "1s"})
    cfg = make_config(state_dir=state_dir, tenants=[{"slug": "acme", "dsn": apache_db.dsn}], sources=[src])
    caplog.set_level(logging.INFO)
    async with running_daemon(cfg) as d:
        h = d.sources["field"]
        assert h.runner is not None
        for outage in range(2):
            attempts = h.runner.attempts
            broker.stop()
            await eventually(lambda a=attempts: h.runner.attempts >= a + 5, "five reconnect attempts")
            broker.start()
            await eventually(lambda: h.device_up.get("") is True, "the source reconnected")
            await publish(broker, [(f"{p}/w1/p", {"ts": 1_700_000_000_000 + outage, "value": 1})])
            await wait_rows(apache_db, outage + 1)
    ours = [r for r in caplog.records if "source field" in r.getMessage()]
    down = [r for r in ours if "is down" in r.getMessage()]
    back = [r for r in ours if "is back" in r.getMessage()]
    assert len(down) == 2 and len(back) == 2, [r.getMessage() for r in ours]
    assert all(r.levelno == logging.WARNING for r in down) and all(r.levelno == logging.INFO for r in back)
    noisy = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r not in down]
    assert noisy == [], "nothing else is logged per reconnect attempt"
    rows = apache_db.query("SELECT source, down_at < up_at FROM source_status ORDER BY down_at")
    assert rows == [("field", True), ("field", True)], "both outage windows recorded and closed"


DSN_PW = "Dsn-S3cret-9f2"
MQTT_PW = "Mqtt-S3cret-41c"


def test_secrets_never_reach_the_log(broker: Mosquitto, state_dir: Path, tmp_path: Path) -> None:
    """Debug logging everywhere (ours and every library's) through database and broker failures, in both
    formats, and check-config's output: neither inline secret ever appears."""
    dead_port = free_port()
    p = f"x{uuid.uuid4().hex[:6]}"
    src = mqtt("field", broker, f"{p}/{{well}}/{{tag}}", client_id=f"field-{p}", backoff_max="200ms")
    src["connection"] = {**src["connection"], "username": "ingestd", "password": MQTT_PW}
    levels = dict.fromkeys(("asyncpg", "aiomqtt", "paho", "ingestd", "adapters"), "debug")
    for fmt in ("text", "json"):
        cfg = make_config(state_dir=state_dir / fmt, sources=[src],
                          tenants=[{"slug": "acme", "pool": {"connect_timeout": "1s"},
                                    "dsn": f"postgresql://ingestd:{DSN_PW}@127.0.0.1:{dead_port}/acme"}],
                          daemon={"log_level": "debug", "log_levels": levels, "log_format": fmt})
        (tmp_path / fmt).mkdir()
        proc = DaemonProcess(cfg, workdir=tmp_path / fmt)
        proc.start()
        try:
            _wait_log(proc, "database unavailable")
            broker.stop()
            _wait_log(proc, "is down")
            broker.start()
            _wait_log(proc, "is back")
            proc.signal(signal.SIGHUP)  # a reload logs the config diff path too
            _wait_log(proc, "reload:")
            assert proc.terminate() == 0
        finally:
            proc.kill()
        text = proc.log_path.read_text()
        assert "cannot create pool" in text or "cannot connect" in text
        assert DSN_PW not in text and MQTT_PW not in text
        if fmt == "json":
            for line in text.splitlines():
                rec = orjson.loads(line)
                assert {"ts", "level", "logger", "msg"} <= set(rec)
    check = subprocess.run([sys.executable, "-m", "ingestd", "check-config", str(tmp_path / "json" / "ingestd.toml")],
                           capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
    assert check.returncode == 0, check.stderr
    assert "secret is written inline" in check.stdout
    assert DSN_PW not in check.stdout + check.stderr and MQTT_PW not in check.stdout + check.stderr


def _wait_log(proc: DaemonProcess, needle: str, timeout: float = 30) -> None:
    import time

    deadline = time.monotonic() + timeout
    while needle not in proc.log_tail(1 << 20):
        if time.monotonic() > deadline:
            raise AssertionError(f"{needle!r} not logged:\n{proc.log_tail()}")
        assert proc.proc is not None and proc.proc.poll() is None, proc.log_tail()
        time.sleep(0.05)  # polling a child process's log file


def test_scrub_blanks_credentials_in_free_text() -> None:
    text = ("connect postgresql://ingestd:hunter2@db:5432/acme failed; password=hunter3 pwd: 'hunter4' "
            "webhook https://x.logic.azure.com/workflows/1/triggers?api-version=1&sig=hunter5&sv=1")
    out = scrub(text)
    for secret in ("hunter2", "hunter3", "hunter4", "hunter5"):
        assert secret not in out
    assert "postgresql://ingestd:***@db:5432/acme" in out and "api-version=1" in out


def test_json_formatter_scrubs_tracebacks() -> None:
    try:
        raise ValueError("bad dsn postgresql://u:topsecret@h/db")
    except ValueError:
        rec = logging.LogRecord("ingestd.x", logging.ERROR, __file__, 1, "failed %s", ("x",), sys.exc_info())
    out = orjson.loads(JsonFormatter().format(rec))
    assert out["msg"] == "failed x" and out["level"] == "error" and "topsecret" not in out["exc"]
    assert "ValueError" in out["exc"]


async def test_levels_per_module_follow_a_reload(apache_db: TenantDb, mosquitto: Mosquitto, state_dir: Path,
                                                 restore_logging: None) -> None:
    p = f"l{uuid.uuid4().hex[:6]}"
    src = mqtt("field", mosquitto, f"{p}/{{well}}/{{tag}}", client_id=f"field-{p}")
    cfg = make_config(state_dir=state_dir, tenants=[{"slug": "acme", "dsn": apache_db.dsn}], sources=[src],
                      daemon={"log_level": "warning", "log_levels": {"ingestd.source.field": "debug"}})
    apply_levels("warning", {"ingestd.source.field": "debug"})
    async with running_daemon(cfg) as d:
        assert logging.getLogger("ingestd.source.field").isEnabledFor(logging.DEBUG)
        assert not logging.getLogger("ingestd.daemon").isEnabledFor(logging.INFO)
        assert not logging.getLogger("aiomqtt").isEnabledFor(logging.INFO), "libraries stay quiet by default"
        new = {**cfg, "daemon": {**cfg["daemon"], "log_level": "info", "log_levels": {"adapters.mqtt": "debug"}}}
        await d.apply_config(parse(new))
        assert not logging.getLogger("ingestd.source.field").isEnabledFor(logging.DEBUG), "dropped: inherits"
        assert logging.getLogger("ingestd.daemon").isEnabledFor(logging.INFO)
        assert logging.getLogger("adapters.mqtt.client").isEnabledFor(logging.DEBUG)
