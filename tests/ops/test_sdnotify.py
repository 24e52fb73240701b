"""``Type=notify`` for real: ``python -m ingestd run`` with NOTIFY_SOCKET pointing at a datagram socket
bound by the test (what systemd does), and WATCHDOG_USEC set."""

from __future__ import annotations

import signal
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ingestd.sdnotify import SdNotifier
from tests.conftest import TenantDb
from tests.integration.test_mqtt_to_db import mqtt_source
from tests.support.daemon import DaemonProcess, config_toml, make_config
from tests.support.mosquitto import Mosquitto


class FakeSystemd:
    """The service manager's end of the notify socket. Like systemd it reads all the time (a thread),
    so the daemon's queue never fills; ``wait_for`` looks at what arrived since the last ``mark()``."""

    def __init__(self, *, reading: bool = True) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="sdn-"))  # short: AF_UNIX paths are limited to 107 bytes
        self.path = self.dir / "notify"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.2)
        self.messages: list[dict[str, str]] = []
        self._seen = 0
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._read, daemon=True) if reading else None
        if self._thread is not None:
            self._thread.start()

    def _read(self) -> None:
        while not self._closed:
            try:
                raw = self.sock.recv(4096)
            except (TimeoutError, OSError):
                continue
            msg = dict(line.split("=", 1) for line in raw.decode().splitlines() if "=" in line)
            with self._cond:
                self.messages.append(msg)
                self._cond.notify_all()

    def mark(self) -> None:
        """Only messages received from now on count for the next ``wait_for``."""
        with self._cond:
            self._seen = len(self.messages)

    def wait_for(self, pred: Callable[[dict[str, str]], bool], what: str, timeout: float = 30) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(self._seen, len(self.messages)):
                    if pred(self.messages[i]):
                        self._seen = i + 1
                        return self.messages[i]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no {what} within {timeout}s; got {self.messages[self._seen:]}")
                self._cond.wait(remaining)

    def close(self) -> None:
        self._closed = True
        if self._thread is not None:
            self._thread.join(5)
        self.sock.close()
        self.path.unlink(missing_ok=True)
        self.dir.rmdir()


@pytest.fixture
def systemd() -> Iterator[FakeSystemd]:
    s = FakeSystemd()
    yield s
    s.close()


def test_ready_watchdog_reloading_stopping(systemd: FakeSystemd, apache_db: TenantDb, mosquitto: Mosquitto,
                                           state_dir: Path) -> None:
    prefix = f"n{uuid.uuid4().hex[:6]}"
    cfg = make_config(state_dir=state_dir, tenants=[{"slug": "acme", "dsn": apache_db.dsn}],
                      sources=[mqtt_source(mosquitto, prefix)])
    proc = DaemonProcess(cfg, env={"NOTIFY_SOCKET": str(systemd.path), "WATCHDOG_USEC": "400000"})
    proc.start()
    try:
        ready = systemd.wait_for(lambda m: m.get("READY") == "1", "READY=1")
        assert "1 tenant(s), 1 source(s)" in ready["STATUS"]
        for _ in range(3):  # WatchdogSec=0.4s → a ping every 0.2s
            systemd.wait_for(lambda m: m.get("WATCHDOG") == "1", "WATCHDOG=1", timeout=5)

        # a valid reload: RELOADING=1 (with MONOTONIC_USEC), then READY=1 again
        proc.write_config({**cfg, "sources": [mqtt_source(mosquitto, prefix, backoff_max="3s")]})
        systemd.mark()
        proc.signal(signal.SIGHUP)
        reloading = systemd.wait_for(lambda m: m.get("RELOADING") == "1", "RELOADING=1")
        assert reloading["MONOTONIC_USEC"].isdigit()
        after = systemd.wait_for(lambda m: m.get("READY") == "1", "READY=1 after the reload")
        assert after["STATUS"].startswith("configuration reloaded")

        # an invalid file: RELOADING=1, READY=1 with a status saying it was rejected, process still up
        proc.config_path.write_text(config_toml(cfg).replace('protocol = "mqtt"', 'protocol = "mqtt"\nbogus = 1'))
        systemd.mark()
        proc.signal(signal.SIGHUP)
        systemd.wait_for(lambda m: m.get("RELOADING") == "1", "RELOADING=1")
        rejected = systemd.wait_for(lambda m: m.get("READY") == "1", "READY=1 after the rejected reload")
        assert "reload rejected" in rejected["STATUS"]
        assert proc.proc is not None and proc.proc.poll() is None
        assert "sources[0].bogus: unknown key" in proc.log_tail()

        systemd.mark()
        rc = proc.terminate()
        systemd.wait_for(lambda m: m.get("STOPPING") == "1", "STOPPING=1")
    finally:
        proc.kill()
    assert rc == 0, proc.log_tail()
    assert "ingestd stopped" in proc.log_tail()


def test_notifier_is_silent_without_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    monkeypatch.setenv("WATCHDOG_PID", "1")  # another process's watchdog: not ours
    n = SdNotifier()
    assert not n.enabled and n.ready() is False and n.watchdog_interval is None


def test_abstract_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"ingestd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        monkeypatch.setenv("WATCHDOG_USEC", "20000000")
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
        n = SdNotifier()
        assert n.watchdog_interval == 10.0
        assert n.stopping()
        s.settimeout(5)
        assert s.recv(100) == b"STOPPING=1"
        n.close()


def test_a_full_notify_queue_never_blocks_the_sender(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nobody reads the socket (a busy service manager): the datagram queue fills and further
    notifications are dropped at once instead of blocking the daemon's event loop."""
    busy = FakeSystemd(reading=False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(busy.path))
    n = SdNotifier()
    started = time.monotonic()
    results = [n.watchdog() for _ in range(200)]
    assert time.monotonic() - started < 2.0
    assert results[0] is True and results[-1] is False
    n.close()
    busy.close()
