"""Live reload (SIGHUP → Daemon.reload_from_file → apply_config) against a real broker and databases:
only what changed restarts, buffered data is never lost, invalid files are refused."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from ingestd.config.load import IngestdConfig
from ingestd.daemon import Daemon
from tests.conftest import TenantDb
from tests.integration.test_daemon import metric
from tests.integration.test_mqtt_to_db import mqtt_source, publish, wait_rows
from tests.ops.conftest import CountingBroker
from tests.ops.helpers import count, eventually, mqtt
from tests.support.daemon import config_toml, make_config, parse, running_daemon


class RecordingExtension:
    """Stands in for the alarm engine: records what the daemon looks like when reload() is called."""

    def __init__(self) -> None:
        self.reloads: list[dict[str, Any]] = []

    async def start(self, daemon: Daemon) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def reload(self, daemon: Daemon, old: IngestdConfig) -> None:
        self.reloads.append({"old_tenants": [t.slug for t in old.tenants],
                             "new_tenants": [t.slug for t in daemon.cfg.tenants],
                             "running_tenants": sorted(daemon.tenants), "sources": sorted(daemon.sources)})


def msgs(topic: str, n: int, t0: int, wells: int = 5) -> list[tuple[str, object]]:
    return [(topic.format(well=f"w{i % wells}", tag="p"), {"ts": t0 + i, "value": float(i)}) for i in range(n)]


async def test_reload_touches_only_what_changed_and_loses_nothing(
        apache_db: TenantDb, plain_db: TenantDb, other_db: TenantDb, counting_broker: CountingBroker,
        state_dir: Path) -> None:
    b, p = counting_broker, f"r{uuid.uuid4().hex[:6]}"
    steady = mqtt("steady", b, f"{p}/steady/{{well}}/{{tag}}", client_id=f"steady-{p}", tenant="acme")
    changing = mqtt("changing", b, f"{p}/changing/{{well}}/{{tag}}", client_id=f"changing-{p}", tenant="acme")
    beta_src = mqtt("beta_src", b, f"{p}/beta/{{well}}/{{tag}}", client_id=f"beta-{p}", tenant="beta")
    v1 = make_config(state_dir=state_dir,
                     tenants=[{"slug": "acme", "dsn": apache_db.dsn}, {"slug": "beta", "dsn": plain_db.dsn}],
                     sources=[steady, changing, beta_src],
                     pipeline={"batch_max_age": "1h", "batch_max_rows": 100_000})
    v2 = make_config(state_dir=state_dir,
                     tenants=[{"slug": "acme", "dsn": apache_db.dsn}, {"slug": "gamma", "dsn": other_db.dsn}],
                     sources=[steady, {**changing, "backoff_max": "2s"},
                              mqtt("gamma_src", b, f"{p}/gamma/{{well}}/{{tag}}", client_id=f"gamma-{p}",
                                   tenant="gamma")],
                     pipeline={"batch_max_age": "100ms", "batch_max_rows": 100_000})
    ext = RecordingExtension()
    t0 = int(time.time() * 1000)
    async with running_daemon(v1, extensions=[ext]) as d:
        kept, changed = d.sources["steady"], d.sources["changing"]
        kept_task, kept_runner = kept.task, kept.runner
        await publish(b, msgs(f"{p}/beta/{{well}}/{{tag}}", 50, t0))
        await publish(b, msgs(f"{p}/steady/{{well}}/{{tag}}", 100, t0))
        # everything is buffered: the batcher waits for an hour or 100k rows
        await eventually(lambda: d.tenants["beta"].inbox.rows == 50 and d.tenants["acme"].inbox.rows == 100,
                         "readings buffered in the inboxes")
        assert count(plain_db) == 0

        reload = asyncio.create_task(d.apply_config(parse(v2)))
        await publish(b, msgs(f"{p}/steady/{{well}}/{{tag}}", 100, t0 + 100))  # during the reload
        await reload
        await publish(b, msgs(f"{p}/steady/{{well}}/{{tag}}", 100, t0 + 200))
        await publish(b, msgs(f"{p}/changing/{{well}}/{{tag}}", 10, t0 + 300))
        await publish(b, msgs(f"{p}/gamma/{{well}}/{{tag}}", 7, t0))

        await wait_rows(apache_db, 310)
        await wait_rows(other_db, 7)
        assert d.sources["steady"] is kept and kept.task is kept_task and kept.runner is kept_runner
        assert not kept_task.done()
        assert d.sources["changing"] is not changed and changed.task is not None and changed.task.done()
        assert sorted(d.tenants) == ["acme", "gamma"]
        assert d.generation == 1
    # the removed tenant's buffered readings were flushed to its database, none lost or duplicated
    assert count(plain_db) == 50
    assert apache_db.query("SELECT count(DISTINCT (tag_id, ts)) FROM readings")[0][0] == 310
    # the broker saw exactly one connection of the unchanged source, two of the changed one
    assert b.connections(f"steady-{p}") == 1
    assert b.connections(f"changing-{p}") == 2
    assert b.connections(f"beta-{p}") == 1
    # the extension hook (the alarm engine keeps the state of unchanged rules there) ran once,
    # after the new tenants and sources were in place
    assert ext.reloads == [{"old_tenants": ["acme", "beta"], "new_tenants": ["acme", "gamma"],
                            "running_tenants": ["acme", "gamma"], "sources": ["changing", "gamma_src", "steady"]}]


async def test_invalid_file_is_refused_and_the_running_config_kept(
        apache_db: TenantDb, counting_broker: CountingBroker, state_dir: Path, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    b, p = counting_broker, f"i{uuid.uuid4().hex[:6]}"
    src = mqtt("field", b, f"{p}/{{well}}/{{tag}}", client_id=f"field-{p}")
    cfg = make_config(state_dir=state_dir, tenants=[{"slug": "acme", "dsn": apache_db.dsn}], sources=[src])
    path = tmp_path / "ingestd.toml"
    path.write_text(config_toml(cfg))
    async with running_daemon(cfg, config_path=path) as d:
        handle = d.sources["field"]
        broken = [
            ({**src, "connection": {**src["connection"], "port": 70000}}, "sources[0].connection.port"),
            ({**src, "lease": "always"}, "sources[0].lease"),
        ]
        for bad_src, key_path in broken:
            path.write_text(config_toml({**cfg, "sources": [bad_src]}))
            caplog.clear()
            assert await d.reload_from_file() is False
            assert "reload rejected, keeping the running configuration" in caplog.text
            assert key_path in caplog.text
            runtime = orjson.loads((state_dir / "runtime.json").read_bytes())
            assert runtime["last_reload"]["ok"] is False and key_path in runtime["last_reload"]["error"]
        path.write_text("this is [not toml")
        assert await d.reload_from_file() is False
        assert "not valid TOML" in caplog.text
        assert d.sources["field"] is handle and d.generation == 0
        await publish(b, msgs(f"{p}/{{well}}/{{tag}}", 20, int(time.time() * 1000)))
        await wait_rows(apache_db, 20)
    assert b.connections(f"field-{p}") == 1


async def test_tenant_moves_to_another_database_without_restarting_sources(
        apache_db: TenantDb, other_db: TenantDb, counting_broker: CountingBroker, state_dir: Path) -> None:
    b, p = counting_broker, f"m{uuid.uuid4().hex[:6]}"
    src = mqtt("field", b, f"{p}/{{well}}/{{tag}}", client_id=f"field-{p}")
    cfg = make_config(state_dir=state_dir, tenants=[{"slug": "acme", "dsn": apache_db.dsn}], sources=[src])
    t0 = int(time.time() * 1000)
    async with running_daemon(cfg) as d:
        handle = d.sources["field"]
        await publish(b, msgs(f"{p}/{{well}}/{{tag}}", 10, t0))
        await wait_rows(apache_db, 10)
        await d.apply_config(parse({**cfg, "tenants": [{"slug": "acme", "dsn": other_db.dsn}]}))
        await publish(b, msgs(f"{p}/{{well}}/{{tag}}", 10, t0 + 10))
        await wait_rows(other_db, 10)
        assert d.sources["field"] is handle
    assert count(apache_db) == 10 and count(other_db) == 10
    assert b.connections(f"field-{p}") == 1


async def test_removing_a_tenant_restarts_the_sources_that_route_to_it(
        apache_db: TenantDb, plain_db: TenantDb, counting_broker: CountingBroker, state_dir: Path) -> None:
    """An unchanged source whose topic template reaches the removed tenant must not keep routing to it
    (its readings would land in a closed inbox and vanish)."""
    b, p = counting_broker, f"t{uuid.uuid4().hex[:6]}"
    src = mqtt_source(b, p)  # "{prefix}/{tenant}/wells/{well}/{tag}": the tenant comes from the topic
    tenants = [{"slug": "acme", "dsn": apache_db.dsn}, {"slug": "beta", "dsn": plain_db.dsn}]
    cfg = make_config(state_dir=state_dir, tenants=tenants, sources=[{**src, "tenant": "acme"}],
                      pipeline={"batch_max_age": "1h"})
    t0 = int(time.time() * 1000)
    async with running_daemon(cfg) as d:
        handle = d.sources["field"]
        await publish(b, [(f"{p}/beta/wells/w1/p", {"ts": t0 + i, "value": i}) for i in range(30)])
        await eventually(lambda: d.tenants["beta"].inbox.rows == 30, "beta's readings buffered")
        await d.apply_config(parse({**cfg, "tenants": tenants[:1], "pipeline": {"batch_max_age": "50ms"}}))
        assert d.sources["field"] is not handle
        assert count(plain_db) == 30
        await publish(b, [(f"{p}/beta/wells/w1/p", {"ts": t0 + 100, "value": 1}),
                          (f"{p}/acme/wells/w1/p", {"ts": t0 + 100, "value": 1})])
        await wait_rows(apache_db, 1)
        # readings for beta are now rejected and dead-lettered, not lost in a closed inbox (those of the 30
        # still unacknowledged when the source restarted come back from the broker and are rejected too)
        await eventually(lambda: metric(d.metrics.render().decode(), "ingestd_malformed_total", source="field",
                                        reason="unknown_tenant") >= 1, "the reading for beta rejected")
    assert count(plain_db) == 30


async def test_a_tag_moves_between_tenants(apache_db: TenantDb, other_db: TenantDb,
                                           counting_broker: CountingBroker, state_dir: Path) -> None:
    b, p = counting_broker, f"g{uuid.uuid4().hex[:6]}"
    src = mqtt("field", b, f"{p}/{{well}}/{{tag}}", client_id=f"field-{p}", tenant="acme",
               tags=[{"name": "w1.p", "tenant": "beta", "unit": "psi"}])
    tenants = [{"slug": "acme", "dsn": apache_db.dsn}, {"slug": "beta", "dsn": other_db.dsn}]
    cfg = make_config(state_dir=state_dir, tenants=tenants, sources=[src])
    t0 = int(time.time() * 1000)
    async with running_daemon(cfg) as d:
        await publish(b, [(f"{p}/w1/p", {"ts": t0, "value": 1.0}), (f"{p}/w2/p", {"ts": t0, "value": 2.0})])
        await wait_rows(other_db, 1)
        await wait_rows(apache_db, 1)
        beta_key = d.tenants["beta"].registry.index["w1.p"]
        moved = {**src, "tags": [{"name": "w1.p", "unit": "psi"}]}
        await d.apply_config(parse({**cfg, "sources": [moved]}))
        # no longer collected for beta: its live value is marked stale, not left looking current
        assert d.tenants["beta"].registry.stale[beta_key]
        await publish(b, [(f"{p}/w1/p", {"ts": t0 + 1, "value": 3.0})])
        await wait_rows(apache_db, 2)
    assert [r[0] for r in other_db.query("SELECT value FROM readings")] == [1.0]
    assert sorted(r[0] for r in apache_db.query("SELECT value FROM readings")) == [2.0, 3.0]


async def test_rotated_secret_restarts_its_source(apache_db: TenantDb, counting_broker: CountingBroker,
                                                  state_dir: Path, tmp_path: Path) -> None:
    b, p = counting_broker, f"s{uuid.uuid4().hex[:6]}"
    secret = tmp_path / "mqtt_password"
    secret.write_text("first\n")
    src = mqtt("field", b, f"{p}/{{well}}/{{tag}}", client_id=f"field-{p}")
    src["connection"] = {**src["connection"], "username": "ingestd", "password": f"file:{secret}"}
    other = mqtt("other", b, f"{p}/x/{{well}}/{{tag}}", client_id=f"other-{p}")
    cfg = make_config(state_dir=state_dir, tenants=[{"slug": "acme", "dsn": apache_db.dsn}], sources=[src, other])
    async with running_daemon(cfg) as d:
        field, unrelated = d.sources["field"], d.sources["other"]
        await d.apply_config(parse(cfg))
        assert d.sources["field"] is field, "same config, same secret: untouched"
        secret.write_text("second\n")
        await d.apply_config(parse(cfg))
        assert d.sources["field"] is not field and d.sources["other"] is unrelated
        await eventually(lambda: d.sources["field"].device_up.get(""), "the restarted source connected")
    assert b.connections(f"field-{p}") == 2 and b.connections(f"other-{p}") == 1
