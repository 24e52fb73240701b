"""Several instances (DESIGN §9): advisory-lock leases in a coordination database, so exactly one
process polls a device and another takes over when it dies."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Gauge

from adapters.registry import REGISTRY
from ingestd.config.model import CoordinationConfig
from ingestd.config.types import Secret
from ingestd.leases import LeaseManager, lease_key, needs_lease
from tests.conftest import TenantDb
from tests.integration.test_daemon import metric
from tests.integration.test_mqtt_to_db import publish, wait_rows
from tests.ops.conftest import CountingBroker
from tests.ops.helpers import eventually, mqtt, start_simulator
from tests.support.daemon import DaemonProcess, make_config, parse
from tests.support.pg import PgServer


@pytest.fixture
def coordination(pg_plain: PgServer) -> Iterator[TenantDb]:
    name = pg_plain.create_database()
    yield TenantDb("postgres", pg_plain, name)
    pg_plain.drop_database(name)


class Holder:
    """One process's view: a manager and a stand-in source that runs while it holds the lease."""

    def __init__(self, dsn: str, instance: str, interval: float = 0.2) -> None:
        self.gauge = Gauge("ingestd_lease_held", "test", ["source"], registry=CollectorRegistry())
        self.manager = LeaseManager(CoordinationConfig(dsn=Secret(dsn), lease_check_interval=interval),
                                    instance=instance, gauge=self.gauge)
        self.running = asyncio.Event()
        self.stopped_by_loss = 0
        self.task: asyncio.Task[None] | None = None

    async def _source(self, name: str) -> None:
        while True:
            async with self.manager.lease(name) as held:
                if not held:
                    return
                self.running.set()
                try:
                    await asyncio.Event().wait()  # "polling"
                finally:
                    self.running.clear()
            self.stopped_by_loss += 1  # lease lost: the body was cancelled, we stand by again

    async def start(self, name: str = "plc1") -> None:
        await self.manager.start()
        self.task = asyncio.create_task(self._source(name))

    def held(self, name: str = "plc1") -> float:
        return self.gauge.labels(name)._value.get()  # type: ignore[no-any-return]

    async def close(self) -> None:
        await self.manager.close()
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


@asynccontextmanager
async def holders(dsn: str, *instances: str) -> AsyncIterator[list[Holder]]:
    hs = [Holder(dsn, i) for i in instances]
    try:
        for h in hs:
            await h.start()
        yield hs
    finally:
        for h in hs:
            await h.close()


async def test_exactly_one_holder_and_takeover_when_it_closes(coordination: TenantDb,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="ingestd.leases")
    async with holders(coordination.dsn, "a", "b", "c") as hs:
        await eventually(lambda: sum(h.running.is_set() for h in hs) == 1, "one holder running")
        await eventually(lambda: caplog.text.count("standing by, another instance holds its lease") == 2,
                         "both others tried and stood by")
        assert sum(h.running.is_set() for h in hs) == 1
        assert sorted(h.held() for h in hs) == [0, 0, 1]
        first = next(h for h in hs if h.running.is_set())
        await first.close()
        await eventually(lambda: sum(h.running.is_set() for h in hs) == 1, "another holder took over", timeout=5)
        assert not first.running.is_set()


async def test_losing_the_connection_stops_the_source_at_once(coordination: TenantDb) -> None:
    async with holders(coordination.dsn, "a", "b") as hs:
        await eventually(lambda: any(h.running.is_set() for h in hs), "a holder running")
        first = next(h for h in hs if h.running.is_set())
        other = next(h for h in hs if h is not first)
        instance = "a" if first is hs[0] else "b"
        # the coordination session of the holder dies (DBA action, network cut, failover)
        coordination.query(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           f"WHERE application_name = 'ingestd-lease:{instance}'")
        await eventually(lambda: first.stopped_by_loss == 1, "the holder stopped its source", timeout=5)
        await eventually(lambda: other.running.is_set() or first.running.is_set(), "a holder again", timeout=5)
        assert sum(h.running.is_set() for h in hs) == 1


async def test_coordination_database_down_stops_leased_sources() -> None:
    server = PgServer(timescaledb=False)  # this test stops its database: not the shared one
    try:
        server.start()
        async with holders(server.dsn(server.create_database()), "a") as (h,):
            await eventually(h.running.is_set, "holding")
            server.stop("immediate")
            await eventually(lambda: h.stopped_by_loss == 1 and not h.running.is_set(), "stopped", timeout=10)
            assert h.held() == 0
            server.start()
            await eventually(h.running.is_set, "re-acquired after the database returned", timeout=15)
    finally:
        server.close()


def test_which_sources_are_leased() -> None:
    base = {"tenants": [{"slug": "acme", "dsn": "env:X"}],
            "sources": [{"name": "m", "protocol": "mqtt", "subscriptions": [{"topic": "a/{tag}"}]}]}
    cfg = parse(base)
    with_db = CoordinationConfig(dsn=Secret("env:COORD"))
    src = cfg.sources[0]
    assert not needs_lease(src, with_db), "push sources share load with shared subscriptions instead"
    assert needs_lease(src.model_copy(update={"lease": "always"}), with_db)
    assert needs_lease(src.model_copy(update={"protocol": "modbus"}), with_db)
    assert not needs_lease(src.model_copy(update={"protocol": "modbus"}), CoordinationConfig())
    assert not needs_lease(src.model_copy(update={"protocol": "opcua", "lease": "never"}), with_db)
    assert lease_key("plc1") == lease_key("plc1") != lease_key("plc2")
    assert -(2**63) <= lease_key("plc1") < 2**63


def _polls(proc: DaemonProcess) -> float:
    try:
        return metric(proc.metrics(), "ingestd_source_events_total", source="field", event="poll")
    except KeyError:
        return 0.0


def _lease_held(proc: DaemonProcess) -> float:
    try:
        return metric(proc.metrics(), "ingestd_lease_held", source="field")
    except (KeyError, OSError):
        return -1.0


async def test_two_processes_one_polls_and_the_other_takes_over_after_kill_9(
        apache_db: TenantDb, coordination: TenantDb, counting_broker: CountingBroker, tmp_path: Path) -> None:
    """Real ``ingestd run`` processes. The leased source is an MQTT source with ``lease = "always"``, so
    both processes use the same client id: had both connected, the broker would have logged more than
    two connections (each would kick the other off)."""
    p = f"k{uuid.uuid4().hex[:6]}"
    src = mqtt("field", counting_broker, f"{p}/{{well}}/{{tag}}", client_id=f"field-{p}", lease="always")
    procs = []
    for name in ("gw_a", "gw_b"):
        (tmp_path / name).mkdir()
        cfg = make_config(state_dir=tmp_path / name / "state", tenants=[{"slug": "acme", "dsn": apache_db.dsn}],
                          sources=[src], coordination={"dsn": coordination.dsn, "lease_check_interval": "500ms"},
                          daemon={"instance_id": name})
        procs.append(DaemonProcess(cfg, workdir=tmp_path / name))
    a, b = procs
    try:
        a.start()
        await eventually(lambda: _lease_held(a) == 1, "gw_a holds the lease")
        b.start()
        await eventually(lambda: "standing by" in b.log_tail(), "gw_b standing by")
        t0 = int(time.time() * 1000)
        await publish(counting_broker, [(f"{p}/w{i % 4}/p", {"ts": t0 + i, "value": i}) for i in range(20)])
        await wait_rows(apache_db, 20)
        assert _lease_held(b) == 0
        assert a.proc is not None
        a.proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        a.proc.wait(10)
        await eventually(lambda: _lease_held(b) == 1, "gw_b took over", timeout=30)
        takeover = time.monotonic() - killed
        await publish(counting_broker, [(f"{p}/w{i % 4}/p", {"ts": t0 + 100 + i, "value": i}) for i in range(20)])
        await wait_rows(apache_db, 40)
        assert b.terminate() == 0
    finally:
        for proc in procs:
            proc.kill()
    assert takeover < 30, takeover
    assert counting_broker.connections(f"field-{p}") == 2, "one connection per holder, never both at once"
    assert apache_db.query("SELECT count(DISTINCT (tag_id, ts)) FROM readings")[0][0] == 40


@pytest.mark.skipif("modbus" not in REGISTRY, reason="the Modbus adapter is not registered yet")
async def test_two_processes_share_a_modbus_device(apache_db: TenantDb, coordination: TenantDb,
                                                   tmp_path: Path) -> None:
    """The real case: a polled Modbus device (the demo's simulated well field) with ``lease = "auto"``."""
    async with start_simulator(tmp_path, ["modbus"], wells=2) as sim:
        src = {"name": "field", "protocol": "modbus", "host": "127.0.0.1", "port": sim["modbus_port"],
               "unit_id": 1, "poll_interval": "200ms",
               "tags": [{"name": "well_01.tubing_pressure", "address": 0, "type": "float32"}]}
        procs = []
        for name in ("gw_a", "gw_b"):
            (tmp_path / name).mkdir()
            cfg = make_config(state_dir=tmp_path / name / "state", tenants=[{"slug": "acme", "dsn": apache_db.dsn}],
                              sources=[src], coordination={"dsn": coordination.dsn, "lease_check_interval": "500ms"},
                              daemon={"instance_id": name})
            procs.append(DaemonProcess(cfg, workdir=tmp_path / name))
        a, b = procs
        try:
            a.start()
            await eventually(lambda: _lease_held(a) == 1, "gw_a polls")
            b.start()
            await eventually(lambda: "standing by" in b.log_tail(), "gw_b standing by")
            await wait_rows(apache_db, 3)
            assert _polls(a) >= 3 and _polls(b) == 0, "only the holder polls the device"
            assert a.proc is not None
            a.proc.send_signal(signal.SIGKILL)
            a.proc.wait(10)
            await eventually(lambda: _lease_held(b) == 1, "gw_b took over", timeout=30)
            await eventually(lambda: _polls(b) >= 3, "gw_b polls")
            before = int(apache_db.query("SELECT count(*) FROM readings")[0][0])  # type: ignore[call-overload]
            await wait_rows(apache_db, before + 3)
            assert b.terminate() == 0
        finally:
            for proc in procs:
                proc.kill()
