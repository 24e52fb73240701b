"""Authentication, scopes and tenant isolation — on every endpoint of the OpenAPI document."""

from __future__ import annotations

import copy
import logging
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import connect

from ingestd.model import now_us
from tests.support.daemon import parse

from .fake_alarms import FakeAlarms
from .support import ApiEnv

BODIES: dict[str, dict[str, Any]] = {
    "/v1/tenants/{tenant}/latest": {"tags": ["w1.p", "w9.secret"]},
    "/v1/tenants/{tenant}/alarms/ack": {"alarm_id": "hi@w9.secret"},
    "/v1/tenants/{tenant}/alarms/shelve": {"alarm_id": "hi@w9.secret", "duration": "5m", "reason": "maintenance"},
    "/v1/tenants/{tenant}/alarms/unshelve": {"alarm_id": "hi@w9.secret"},
    "/v1/tenants/{tenant}/alarms/out-of-service": {"alarm_id": "hi@w9.secret", "out_of_service": True,
                                                   "reason": "maintenance"},
}
QUERIES: dict[str, dict[str, str]] = {
    "/v1/tenants/{tenant}/series": {"tag": "w9.secret", "start": "-1h"},
    "/v1/tenants/{tenant}/export": {"match": "*", "start": "-1h"},
    "/v1/tenants/{tenant}/latest": {"match": "*"},
}


async def _seed(env: ApiEnv, fake: FakeAlarms) -> None:
    await env.ingest("acme", "w1", ["p"], 5)
    await env.ingest("beta", "w9", ["secret"], 5)
    fake.raise_alarm("acme", "hi@w1.p")
    fake.raise_alarm("beta", "hi@w9.secret")


async def _operations(env: ApiEnv) -> list[tuple[str, str]]:
    spec = (await env.client().get("/openapi.json")).json()
    return [(path, method) for path, ops in spec["paths"].items() for method in ops]


async def _call(c: httpx.AsyncClient, method: str, path: str, tenant: str) -> httpx.Response:
    url = path.replace("{tenant}", tenant)
    body = BODIES.get(path) if method == "post" else None
    params = QUERIES.get(path, {}) if method == "get" else {}
    return await c.request(method.upper(), url, params=params, json=body)


async def test_every_tenant_endpoint_refuses_another_tenants_token(env1: ApiEnv, fake_alarms: FakeAlarms) -> None:
    await _seed(env1, fake_alarms)
    ops = [(p, m) for p, m in await _operations(env1) if "{tenant}" in p]
    assert len(ops) >= 15, ops
    own = env1.client("acme_admin")
    for path, method in ops:
        ok = await _call(own, method, path.replace("w9.secret", "w1.p"), "acme")
        if path in BODIES:  # the own-tenant call acts on acme's alarm instead
            body = {k: (v.replace("w9.secret", "w1.p") if isinstance(v, str) else v) for k, v in BODIES[path].items()}
            ok = await own.request(method.upper(), path.replace("{tenant}", "acme"), json=body)
        assert ok.status_code < 500, (path, method, ok.text)
    fake_alarms.calls.clear()
    for token in ("acme_read", "acme_ack", "acme_admin"):
        c = env1.client(token)
        for path, method in ops:
            r = await _call(c, method, path, "beta")
            assert r.status_code == 404, (token, method, path, r.status_code, r.text)
            assert r.json() == {"error": "tenant not found", "parameter": "tenant"}
            assert "secret" not in r.text
    assert fake_alarms.calls == [], "the alarm engine must never be reached for another tenant"


async def test_every_endpoint_needs_a_token(env1: ApiEnv) -> None:
    anonymous = env1.client()
    bogus = env1.client("igd_acme_not-a-real-token")
    open_paths = {"/healthz", "/v1/alarms/ack"}
    for path, method in await _operations(env1):
        for c in (anonymous, bogus):
            r = await _call(c, method, path, "acme")
            if path in open_paths:
                assert r.status_code != 401
                continue
            assert r.status_code == 401, (path, method, r.text)
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert r.json()["error"] in ("missing bearer token (Authorization: Bearer <token>)", "invalid bearer token")


async def test_stream_refuses_another_tenants_token(env1: ApiEnv) -> None:
    url = f"{env1.ws_base}/v1/tenants/beta/stream"
    for headers in ({"Authorization": f"Bearer {env1.tokens['acme_read']}"}, {}):
        async with connect(url, additional_headers=headers) as ws:
            if not headers:
                await ws.send('{"type": "auth", "token": "' + env1.tokens["acme_admin"] + '"}')
            with pytest.raises(websockets.ConnectionClosed) as e:
                await ws.recv()
            assert e.value.rcvd is not None and e.value.rcvd.code == 1008


async def test_scopes(env1: ApiEnv, fake_alarms: FakeAlarms) -> None:
    await _seed(env1, fake_alarms)
    read, ack, admin = env1.client("acme_read"), env1.client("acme_ack"), env1.client("acme_admin")
    body = {"alarm_id": "hi@w1.p", "comment": "seen"}
    r = await read.post("/v1/tenants/acme/alarms/ack", json=body)
    assert r.status_code == 403 and "'ack' scope" in r.json()["error"]
    assert fake_alarms.acting_calls() == []
    assert (await ack.get("/v1/tenants/acme/tags")).status_code == 200, "ack includes read"
    r = await ack.post("/v1/tenants/acme/alarms/ack", json=body)
    assert r.status_code == 200 and r.json()["alarm"]["state"] == "ACK_ACTIVE"
    assert (await ack.get("/metrics")).status_code == 403
    m = await admin.get("/metrics")
    assert m.status_code == 200 and 'tenant="acme"' in m.text and 'tenant="beta"' not in m.text
    assert "field_beta" not in m.text


async def test_host_subdomain_must_match_the_token(env1: ApiEnv) -> None:
    c = env1.client("acme_read")
    assert (await c.get("/v1/tenants/acme/tags", headers={"Host": "acme.api.example.com"})).status_code == 200
    assert (await c.get("/v1/tenants/acme/tags", headers={"Host": "api.example.com"})).status_code == 200
    r = await c.get("/v1/tenants/acme/tags", headers={"Host": "beta.api.example.com"})
    assert r.status_code == 403 and "Host" in r.json()["error"]
    assert (await c.get("/readyz", headers={"Host": "beta.api.example.com"})).status_code == 403


async def test_tokens_and_link_signatures_never_logged_or_echoed(env1: ApiEnv, fake_alarms: FakeAlarms,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    await _seed(env1, fake_alarms)
    caplog.set_level(logging.DEBUG)
    rec = fake_alarms.records[("acme", "hi@w1.p")]
    assert rec.event_id is not None
    link = fake_alarms.links.url("acme", "hi@w1.p", rec.event_id, now_us())
    sig = link.rsplit("s=", 1)[1]
    wrong = env1.tokens["acme_read"][:-4] + "AAAA"
    texts = []
    for token in (env1.tokens["acme_read"], wrong, env1.tokens["beta_admin"]):
        c = env1.client(token)
        for path in ("/v1/tenants/acme/tags", "/v1/tenants/acme/latest?match=*", "/readyz", "/metrics",
                     "/v1/tenants/acme/series?tag=bad%20tag"):
            texts.append((await c.get(path)).text)
    anon = env1.client()
    texts.append((await anon.get(link.replace("https://api.example.com", ""))).text)
    texts.append((await anon.post(link.replace("https://api.example.com", ""), data={"user": "Ann"})).text)
    texts.append((await anon.get(link.replace("https://api.example.com", "")[:-3] + "abc")).text)
    secrets = [*env1.tokens.values(), wrong, sig]
    logged = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith(("httpx", "httpcore")))
    assert "uvicorn.access" not in {r.name for r in caplog.records}
    for s in secrets:
        assert s not in logged
        assert all(s not in t for t in texts)


async def _drain(ws: Any) -> None:
    while True:
        await ws.recv()


async def test_reload_revokes_tokens_and_stream_clients(env1: ApiEnv) -> None:
    d = env1.daemon
    url = f"{env1.ws_base}/v1/tenants/acme/stream"
    async with connect(url, additional_headers={"Authorization": f"Bearer {env1.tokens['acme_read']}"}) as ws:
        await ws.send('{"type": "subscribe", "patterns": ["*"]}')
        assert '"subscribed"' in str(await ws.recv())
        raw = copy.deepcopy(env1.cfg)
        acme = raw["tenants"][0]
        acme["api_tokens"] = [t for t in acme["api_tokens"] if t["name"] != "acme-read"]
        await d.apply_config(parse(raw))
        with pytest.raises(websockets.ConnectionClosed) as e:
            await _drain(ws)
        assert e.value.rcvd is not None and e.value.rcvd.code == 1008
    assert (await env1.client("acme_read").get("/v1/tenants/acme/tags")).status_code == 401
    assert (await env1.client("acme_ack").get("/v1/tenants/acme/tags")).status_code == 200
