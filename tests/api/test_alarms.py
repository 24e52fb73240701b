"""Alarm endpoints over HTTP against a fake engine: listing, actions, error mapping, the signed ack link."""

from __future__ import annotations

from pathlib import Path

from ingestd.model import now_us
from tests.conftest import TenantDb
from tests.support.mosquitto import Mosquitto

from .fake_alarms import FakeAlarms
from .support import ApiEnv, api_env

BASE = "https://api.example.com"


async def test_alarm_endpoints_503_without_engine(apache_db: TenantDb, beta_apache: TenantDb, mosquitto: Mosquitto,
                                                  state_dir: Path) -> None:
    async with api_env(apache_db, beta_apache, mosquitto, state_dir) as env:
        c = env.client("acme_ack")
        for method, path, body in (("GET", "active", None), ("GET", "history", None), ("GET", "kpis", None),
                                   ("POST", "ack", {"alarm_id": "hi@w1.p"})):
            r = await c.request(method, f"/v1/tenants/acme/alarms/{path}", json=body)
            assert r.status_code == 503, (path, r.text)
            assert r.json()["error"] == "the alarm engine is not running"
        r = await env.client().get("/v1/alarms/ack", params={"t": "acme", "a": "x", "e": "y", "x": "1", "s": "z"})
        assert r.status_code == 503 and "text/html" in r.headers["content-type"]


async def test_active_history_kpis(env1: ApiEnv, fake_alarms: FakeAlarms) -> None:
    for i in range(5):
        fake_alarms.raise_alarm("acme", f"hi@w{i}.p", at=now_us() - 1000 * i)
    fake_alarms.raise_alarm("beta", "hi@w9.secret")
    fake_alarms.leak = fake_alarms.records[("beta", "hi@w9.secret")]
    c = env1.client("acme_read")
    seen = []
    cursor = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = (await c.get("/v1/tenants/acme/alarms/active", params=params)).json()
        seen += [a["alarm_id"] for a in page["items"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert sorted(seen) == [f"hi@w{i}.p" for i in range(5)], "paged, complete, and never another tenant's alarm"
    a = (await c.get("/v1/tenants/acme/alarms/active", params={"unacked": "true", "priority": "medium"})).json()
    first = a["items"][0]
    assert first["state"] == "UNACK_ACTIVE" and first["tag"] == first["alarm_id"].split("@")[1]
    assert first["rule"] == "hi" and first["priority"] == "medium" and first["value"] == 900.0
    h = (await c.get("/v1/tenants/acme/alarms/history", params={"limit": "3"})).json()
    assert len(h["items"]) == 3 and h["next"] is not None
    h2 = (await c.get("/v1/tenants/acme/alarms/history", params={"limit": "3", "cursor": h["next"]})).json()
    assert len(h2["items"]) == 2 and h2["next"] is None
    assert all(e["kind"] == "ACTIVATED" for e in h["items"] + h2["items"])
    k = (await c.get("/v1/tenants/acme/alarms/kpis", params={"start": "-1h"})).json()
    assert k["kpis"] == {"annunciated": 5, "per_10_min_max": 5}
    r = await c.get("/v1/tenants/acme/alarms/history", params={"cursor": h["next"][:-2] + "zz"})
    assert r.status_code == 400 and r.json()["parameter"] == "cursor"


async def test_actions_validation_and_error_mapping(env1: ApiEnv, fake_alarms: FakeAlarms) -> None:
    fake_alarms.raise_alarm("acme", "hi@w1.p")
    c = env1.client("acme_ack")
    url = "/v1/tenants/acme/alarms"
    r = await c.post(f"{url}/shelve", json={"alarm_id": "hi@w1.p", "duration": "10m"})
    assert r.status_code == 400 and r.json()["parameter"] == "reason"
    r = await c.post(f"{url}/shelve", json={"alarm_id": "hi@w1.p", "reason": "maint"})
    assert r.status_code == 400 and r.json()["parameter"] == "duration"
    r = await c.post(f"{url}/shelve", json={"alarm_id": "hi@w1.p", "reason": "maint", "duration": "soon"})
    assert r.status_code == 400 and r.json()["parameter"] == "duration"
    r = await c.post(f"{url}/shelve", json={"alarm_id": "hi@w1.p", "reason": "maint", "duration": "9h"})
    assert r.status_code == 422 and "maximum" in r.json()["error"]
    r = await c.post(f"{url}/ack", json={"alarm_id": "hi@nope"})
    assert r.status_code == 404 and r.json()["parameter"] == "alarm_id"
    r = await c.post(f"{url}/ack", json={"alarm_id": "hi@w1.p", "surprise": 1})
    assert r.status_code == 400 and r.json()["parameter"] == "surprise"
    r = await c.post(f"{url}/ack", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400
    ok = await c.post(f"{url}/ack", json={"alarm_id": "hi@w1.p", "comment": "on it", "user": "Ann"})
    assert ok.status_code == 200 and ok.json()["alarm"]["acked_by"] == "Ann (token:acme-ack)"
    again = await c.post(f"{url}/ack", json={"alarm_id": "hi@w1.p"})
    assert again.status_code == 409
    r = await c.post(f"{url}/shelve", json={"alarm_id": "hi@w1.p", "reason": "maint", "duration": "30m"})
    assert r.status_code == 200 and r.json()["alarm"]["display_state"] == "SHELVED"
    assert r.json()["alarm"]["shelved"]["reason"] == "maint"
    r = await c.post(f"{url}/unshelve", json={"alarm_id": "hi@w1.p"})
    assert r.status_code == 200 and r.json()["alarm"]["shelved"] is None
    assert (await c.post(f"{url}/unshelve", json={"alarm_id": "hi@w1.p"})).status_code == 409
    r = await c.post(f"{url}/out-of-service",
                     json={"alarm_id": "hi@w1.p", "out_of_service": True, "reason": "MOC-12"})
    assert r.status_code == 200 and r.json()["alarm"]["display_state"] == "OUT_OF_SERVICE"
    r = await c.post(f"{url}/out-of-service", json={"alarm_id": "hi@w1.p", "out_of_service": False})
    assert r.status_code == 200 and r.json()["alarm"]["out_of_service"] is None
    operator = {"ACKED", "SHELVED", "UNSHELVED", "REMOVED_FROM_SERVICE", "RETURNED_TO_SERVICE"}
    journal = [(e.kind.value, e.user) for e in fake_alarms.journal if e.alarm_id == "hi@w1.p" and e.kind in operator]
    tok = "token:acme-ack"
    assert journal == [("ACKED", f"Ann ({tok})"), ("SHELVED", tok), ("UNSHELVED", tok), ("REMOVED_FROM_SERVICE", tok),
                       ("RETURNED_TO_SERVICE", tok)]


async def test_signed_link_get_never_acts_post_acknowledges(env1: ApiEnv, fake_alarms: FakeAlarms) -> None:
    rec = fake_alarms.raise_alarm("acme", "hi@w1.p")
    assert rec.event_id is not None
    link = fake_alarms.links.url("acme", "hi@w1.p", rec.event_id, now_us()).removeprefix(BASE)
    anon = env1.client()
    for _ in range(3):  # link previews, mail scanners, a curious user
        page = await anon.get(link)
        assert page.status_code == 200 and "<form method=post>" in page.text and "hi@w1.p" in page.text
        assert page.headers["referrer-policy"] == "no-referrer" and page.headers["cache-control"] == "no-store"
    head = await anon.head(link)
    assert head.status_code in (200, 405)
    assert fake_alarms.acting_calls() == [], "GET must never acknowledge"
    assert fake_alarms.records[("acme", "hi@w1.p")].state.value == "UNACK_ACTIVE"
    done = await anon.post(link, data={"user": "Bob <script>", "comment": "on my way"})
    assert done.status_code == 200 and "Acknowledged" in done.text and "<script>" not in done.text
    assert fake_alarms.records[("acme", "hi@w1.p")].acked_by == "Bob <script> (ack link)"
    twice = await anon.post(link)
    assert twice.status_code == 200 and "Already acknowledged" in twice.text


async def test_signed_link_refusals(env1: ApiEnv, fake_alarms: FakeAlarms) -> None:
    rec = fake_alarms.raise_alarm("acme", "hi@w1.p")
    assert rec.event_id is not None
    anon = env1.client()
    good = fake_alarms.links.url("acme", "hi@w1.p", rec.event_id, now_us()).removeprefix(BASE)
    tampered = good.replace("a=hi%40w1.p", "a=hi%40w2.p")
    assert tampered != good
    for method in ("GET", "POST"):
        r = await anon.request(method, tampered)
        assert r.status_code == 403 and "not valid" in r.text
    old = fake_alarms.links.url("acme", "hi@w1.p", rec.event_id, now_us() - 2 * 3600 * 1_000_000).removeprefix(BASE)
    for method in ("GET", "POST"):
        assert (await anon.request(method, old)).status_code == 410
    r = await anon.post(good, headers={"Host": "beta.api.example.com"})
    assert r.status_code == 403
    stale = fake_alarms.links.url("acme", "hi@w1.p", "evt-older", now_us()).removeprefix(BASE)
    r = await anon.post(stale)
    assert r.status_code == 409 and "earlier occurrence" in r.text
    r = await anon.get("/v1/alarms/ack", params={"t": "acme"})
    assert r.status_code == 400 and r.json()["parameter"] == "a"
    assert fake_alarms.acting_calls() == [("ack", "acme", "hi@w1.p")], "only the stale link reached the engine"
