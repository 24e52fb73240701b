"""Operations: health, readiness, metrics, OpenAPI, lifecycle (port 0, runtime.json, bind retry, stop)."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
import websockets
from websockets.asyncio.client import connect

from ingestd.auth import hash_token, new_token
from tests.conftest import TenantDb
from tests.support.daemon import DaemonProcess, make_config
from tests.support.mosquitto import Mosquitto
from tests.support.ports import free_port
from tests.support.wait import eventually, eventually_sync

from .support import ApiEnv, api_env


async def test_health_readiness_and_metrics(env1: ApiEnv) -> None:
    anon = env1.client()
    h = await anon.get("/healthz")
    assert h.status_code == 200 and h.json() == {"status": "ok"}
    r = await env1.client("acme_read").get("/readyz")
    assert r.status_code == 200
    body = r.json()
    assert body["ready"] is True and body["tenant"] == "acme" and body["database"]["healthy"] is True
    assert [s["name"] for s in body["sources"]] == ["field_acme"] and body["sources"][0]["up"] is True
    m = await env1.client("acme_admin").get("/metrics")
    assert m.headers["content-type"].startswith("text/plain")
    assert "ingestd_api_requests_total" in m.text and 'route="/readyz"' in m.text


async def test_readiness_reports_a_dead_database(apache_db: TenantDb, beta_apache: TenantDb, mosquitto: Mosquitto,
                                                 state_dir: Path) -> None:
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    async with api_env(apache_db, beta_apache, mosquitto, state_dir, beta_dsn=dead) as env:
        ok = await env.client("acme_read").get("/readyz")
        assert ok.status_code == 200, "one tenant's dead database does not make another tenant unready"
        r = await env.client("beta_read").get("/readyz")
        assert r.status_code == 503
        body = r.json()
        assert body["ready"] is False and body["database"]["healthy"] is False
        assert body["reasons"][0].startswith("tenant database unavailable")
        assert "nowhere" not in r.text or "postgres@" not in r.text
        q = await env.client("beta_read").get("/v1/tenants/beta/tags")
        assert q.status_code == 503 and q.json()["error"].startswith("tenant database unavailable")
        assert q.headers["retry-after"]


async def test_readiness_and_staleness_follow_the_sources(apache_db: TenantDb, beta_apache: TenantDb,
                                                          broker: Mosquitto, state_dir: Path) -> None:
    async with api_env(apache_db, beta_apache, broker, state_dir) as env:
        await env.ingest("acme", "w1", ["p"], 3)
        c = env.client("acme_read")
        latest = (await c.get("/v1/tenants/acme/latest", params={"tag": "w1.p"})).json()
        assert latest["items"][0]["stale"] is False
        broker.kill()

        async def unready() -> dict[str, Any] | None:
            r = await c.get("/readyz")
            return r.json() if r.status_code == 503 else None

        body = await eventually(unready, what="readyz 503 after the broker died")
        assert body["reasons"] == ["no source is up"] and body["sources"][0]["up"] is False
        latest = (await c.get("/v1/tenants/acme/latest", params={"tag": "w1.p"})).json()
        assert latest["items"][0]["stale"] is True and latest["items"][0]["value"] == 2.0
        outages = (await c.get("/v1/tenants/acme/sources/outages")).json()
        broker.start()

        async def ready() -> bool:
            return (await c.get("/readyz")).status_code == 200

        await eventually(ready, timeout=30, what="readyz 200 after the broker returned")
        outages = await eventually(lambda: _closed_outage(c), what="closed outage window")
        assert outages[0]["source"] == "field_acme" and outages[0]["up_us"] >= outages[0]["down_us"]


async def _closed_outage(c: Any) -> list[dict[str, Any]] | None:
    items: list[dict[str, Any]] = (await c.get("/v1/tenants/acme/sources/outages")).json()["items"]
    return items if items and items[0]["up_us"] is not None else None


async def test_metrics_can_be_open(apache_db: TenantDb, beta_apache: TenantDb, mosquitto: Mosquitto,
                                   state_dir: Path) -> None:
    async with api_env(apache_db, beta_apache, mosquitto, state_dir, metrics_auth="open") as env:
        r = await env.client().get("/metrics")
        assert r.status_code == 200 and 'tenant="beta"' in r.text and 'tenant="acme"' in r.text


async def test_openapi_documents_our_errors(env1: ApiEnv) -> None:
    spec = (await env1.client().get("/openapi.json")).json()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    assert "ErrorBody" in spec["components"]["schemas"]
    series = spec["paths"]["/v1/tenants/{tenant}/series"]["get"]
    assert "422" not in series["responses"] and "400" in series["responses"]
    assert series["security"] == [{"token": []}]
    assert spec["paths"]["/healthz"]["get"].get("security") is None


async def test_port_zero_runtime_file_and_graceful_stop(env1: ApiEnv) -> None:
    info = orjson.loads((Path(env1.daemon.cfg.daemon.state_dir) / "runtime.json").read_bytes())
    assert info["api_port"] == env1.daemon.api_port and info["api_port"] > 0
    headers = {"Authorization": f"Bearer {env1.tokens['acme_read']}"}
    async with connect(f"{env1.ws_base}/v1/tenants/acme/stream", additional_headers=headers) as ws:
        await ws.send('{"type": "ping"}')
        await ws.recv()
        assert env1.ext.ctx is not None
        await asyncio.wait_for(env1.ext.stop(), 10)
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", env1.daemon.api_port or 0), timeout=2).close()
    assert env1.ext.ctx is None and env1.ext._server is None


async def test_port_in_use_does_not_stop_ingestion(apache_db: TenantDb, beta_apache: TenantDb,
                                                   mosquitto: Mosquitto, state_dir: Path) -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    try:
        async with api_env(apache_db, beta_apache, mosquitto, state_dir, api={"listen": f"127.0.0.1:{port}"}) as env:
            await env.ingest("acme", "w1", ["p"], 3)  # ingestion works without the API
            assert env.daemon.api_port is None
            blocker.close()
            await eventually(lambda: env.daemon.api_port == port, timeout=10, what="API bound after retry")
            assert (await env.client().get("/healthz")).status_code == 200
    finally:
        blocker.close()


def test_ingestd_run_serves_the_api(apache_db: TenantDb, state_dir: Path) -> None:
    """The real process (``ingestd run``): the API is a default extension, bound to port 0."""
    token = new_token("acme")
    cfg = make_config(state_dir=state_dir, tenants=[{"slug": "acme", "dsn": apache_db.dsn, "api_tokens": [
        {"name": "ops", "hash": hash_token(token), "scopes": ["admin"]}]}])
    del cfg["sources"]  # config_toml would write "sources = []" after [[tenants]], i.e. into the last tenant
    cfg["api"] = {"listen": "127.0.0.1:0"}
    proc = DaemonProcess(cfg)
    info = proc.start()
    try:
        port = info["api_port"]
        assert port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            assert r.status == 200
        req = urllib.request.Request(f"http://127.0.0.1:{port}/readyz", headers={"Authorization": f"Bearer {token}"})

        def ready() -> bool:
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    return bool(orjson.loads(r.read())["ready"])
            except urllib.error.HTTPError:
                return False

        eventually_sync(ready, what="readyz 200 from the ingestd process")
        assert proc.terminate() == 0
        assert token not in proc.log_tail(1_000_000)
    finally:
        proc.kill()
