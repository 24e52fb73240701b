"""Helpers of the fault drills: a QoS 1 publisher that knows what the broker acknowledged, the
exactly-once check against the tenant database, metrics and log scraping, RSS sampling.

Readings are published as MQTT JSON messages ``<prefix>/<tenant>/gw<N>`` carrying ``values``
readings that share one timestamp: the publish time in µs, made strictly increasing, so every
(gateway, ts) pair — and therefore every (tag, ts) — is unique and latency can be measured from it.
"Stored exactly once" is then checked per message.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
import psutil

from tests.support.daemon import DaemonProcess, scrape
from tests.support.mosquitto import Mosquitto
from tests.support.pg import PgServer

__all__ = [
    "AckingPublisher",
    "RssSampler",
    "Verdict",
    "metric",
    "metrics_of",
    "mqtt_source",
    "replay_rates",
    "verify_exactly_once",
]


def mqtt_source(broker: Mosquitto, prefix: str, **extra: Any) -> dict[str, Any]:
    """The MQTT JSON source the publisher feeds (tenant from the topic, tag ``gw<N>.t<MM>``)."""
    src: dict[str, Any] = {
        "name": "field",
        "protocol": "mqtt",
        "connection": {"host": "127.0.0.1", "port": broker.port, "client_id": f"ingestd-{prefix}",
                       "receive_maximum": 1000},
        "subscriptions": [{"topic": f"{prefix}/{{tenant}}/{{gw}}", "tenant": "{tenant}", "tag": "{gw}.{key}",
                           "values_path": "values", "timestamp_path": "ts", "timestamp_unit": "us"}],
        "backoff_initial": "100ms",
        "backoff_max": "1s",
        "breaker_reset": "1s",
    }
    src.update(extra)
    return src


class AckingPublisher:
    """A paho QoS 1 publisher on its own thread. ``acked`` holds the (gateway, ts) of every message
    the broker acknowledged (PUBACK) — what the broker promised to deliver to ingestd's persistent
    session. It reconnects by itself (persistent session: unacknowledged messages are resent)."""

    def __init__(self, port: int, prefix: str, *, tenants: Iterable[str] = ("acme",), gateways: int = 10,
                 values: int = 50) -> None:
        self.prefix = prefix
        self.tenants = list(tenants)
        self.gateways = gateways
        self.values = values
        self._last_ts = 0
        self._lock = threading.Lock()
        self._pending: dict[int, tuple[str, str, int]] = {}
        self.sent: list[tuple[str, str, int]] = []
        self.acked: list[tuple[str, str, int]] = []
        self._early: set[int] = set()
        self.count = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"pub-{prefix}-{uuid.uuid4().hex[:6]}",
                        protocol=paho.MQTTv311, clean_session=False)
        c.max_inflight_messages_set(500)
        c.max_queued_messages_set(0)
        c.reconnect_delay_set(0.05, 0.5)
        c.on_publish = self._on_publish
        c.connect("127.0.0.1", port)
        c.loop_start()
        self.client = c
        self._keys = [f"t{j:02d}" for j in range(values)]

    def _on_publish(self, client: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        # paho's network thread, holding paho's locks: never wait for publish_one() here
        with self._lock:
            msg = self._pending.pop(mid, None)
            if msg is None:
                self._early.add(mid)  # acknowledged before publish_one() recorded it
            else:
                self.acked.append(msg)

    def publish_one(self) -> None:
        i = self.count
        self.count += 1
        tenant = self.tenants[i % len(self.tenants)]
        gw = f"gw{(i // len(self.tenants)) % self.gateways}"
        ts = self._last_ts = max(int(time.time() * 1e6), self._last_ts + 1)  # real time, unique per message
        payload = orjson.dumps({"ts": ts, "values": dict.fromkeys(self._keys, float(i % 1000))})
        info = self.client.publish(f"{self.prefix}/{tenant}/{gw}", payload, qos=1)
        msg = (tenant, gw, ts)
        with self._lock:
            self.sent.append(msg)
            if info.mid in self._early:
                self._early.discard(info.mid)
                self.acked.append(msg)
            else:
                self._pending[info.mid] = msg

    def start_steady(self, points_per_s: float) -> None:
        """Publish at ``points_per_s`` readings per second until :meth:`stop`."""
        per_s = points_per_s / self.values

        def run() -> None:
            start = time.monotonic()
            n = 0
            while not self._stop.is_set():
                due = start + n / per_s
                delay = due - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return
                self.publish_one()
                n += 1

        self._thread = threading.Thread(target=run, name="publisher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def wait_acked(self, timeout: float = 60) -> None:
        """Wait until the broker acknowledged everything sent (external process: observe)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._pending:
                    return
            time.sleep(0.05)  # observing another process (the broker)
        raise AssertionError(f"{len(self._pending)} messages never acknowledged by the broker")

    def close(self) -> None:
        self.stop()
        self.client.loop_stop()
        self.client.disconnect()

    @property
    def points_sent(self) -> int:
        return len(self.sent) * self.values


@dataclass
class Verdict:
    acked_messages: int
    stored_rows: int
    lost_messages: list[tuple[str, str, int]] = field(default_factory=list)
    partial_messages: list[tuple[str, str, int]] = field(default_factory=list)
    phantom_messages: int = 0
    duplicated_rows: int = 0

    @property
    def ok(self) -> bool:
        return not (self.lost_messages or self.partial_messages or self.phantom_messages or self.duplicated_rows)


def stored_messages(pg: PgServer, db: str, tenant: str) -> dict[tuple[str, str, int], int]:
    rows = pg.execute(
        "SELECT split_part(t.name, '.', 1), "
        "(extract(epoch FROM r.ts) * 1000000)::bigint, count(*) FROM readings r JOIN tags t USING (tag_id) "
        "GROUP BY 1, 2", db)
    return {(tenant, str(gw), int(ts)): int(n) for gw, ts, n in rows}  # type: ignore[call-overload]


def verify_exactly_once(pg: PgServer, db: str, pub: AckingPublisher, tenant: str = "acme") -> Verdict:
    """Every message the broker acknowledged is stored with all its readings, nothing is stored twice,
    nothing is stored that was never sent."""
    stored = stored_messages(pg, db, tenant)
    total, distinct = pg.execute("SELECT count(*), count(DISTINCT (tag_id, ts)) FROM readings", db)[0]
    sent = {m for m in pub.sent if m[0] == tenant}
    acked = [m for m in pub.acked if m[0] == tenant]
    v = Verdict(len(acked), int(total))  # type: ignore[call-overload]
    v.duplicated_rows = int(total) - int(distinct)  # type: ignore[call-overload]
    for m in acked:
        n = stored.get(m, 0)
        if n == 0:
            v.lost_messages.append(m)
        elif n != pub.values:
            v.partial_messages.append(m)
    v.phantom_messages = sum(1 for m in stored if m not in sent)
    return v


def metrics_of(proc: DaemonProcess) -> str:
    return scrape(int(proc.runtime["metrics_port"]))


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` matching ``labels`` (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith((name + "{", name + " ")):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


_REPLAYED = re.compile(r"replayed (\d+) readings from \S+ in ([\d.]+)s")


def replay_rates(log_text: str) -> tuple[int, float]:
    """(readings replayed, seconds spent replaying) from the daemon's per-segment log lines."""
    n, secs = 0, 0.0
    for m in _REPLAYED.finditer(log_text):
        n += int(m.group(1))
        secs += float(m.group(2))
    return n, secs


class RssSampler:
    """Samples the resident set size of a process (and its children) on a thread."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.proc = psutil.Process(pid)
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._interval = interval
        self._thread = threading.Thread(target=self._run, name="rss", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic(), self.proc.memory_info().rss / 2**20))
            except psutil.Error:
                return
            self._stop.wait(self._interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def peak(self, since: float = 0.0) -> float:
        return max((mb for t, mb in self.samples if t >= since), default=0.0)

    def at(self, t: float) -> float:
        """The last sample taken at or before ``t``."""
        before = [mb for ts, mb in self.samples if ts <= t]
        return before[-1] if before else (self.samples[0][1] if self.samples else 0.0)


def newest_segment(state_dir: Path, tenant: str) -> Path | None:
    segs = sorted((state_dir / "spool" / tenant).glob("seg-*.spool"))
    return segs[-1] if segs else None
