"""The query API's alarm endpoints against the real alarm engine (not a fake): the card's signed Acknowledge
link (GET shows a page and never acts, POST acknowledges that episode), lists, history, KPIs, shelving and
out of service over HTTP with scoped tokens."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import httpx

from alarms.engine import AlarmExtension
from ingestd.api.server import ApiExtension
from ingestd.auth import hash_token, new_token
from tests.alarms.support import PUBLIC_URL, alarm_env, cards, limit_rule
from tests.conftest import TenantDb
from tests.support.mosquitto import Mosquitto

AID = "casing@w1.casing_pressure"


async def test_alarm_api_with_the_engine(apache_db: TenantDb, mosquitto: Mosquitto, state_dir: Path) -> None:
    read, ack = new_token("acme"), new_token("acme")
    tokens = [{"name": "dash", "hash": hash_token(read), "scopes": ["read"]},
              {"name": "oncall", "hash": hash_token(ack), "scopes": ["read", "ack"]}]
    api = ApiExtension()
    async with alarm_env(apache_db, mosquitto, state_dir, rules=[limit_rule(tags=["w*.casing_pressure"])],
                         tenant={"api_tokens": tokens}, api_listen="127.0.0.1:0",
                         extra_extensions=[api]) as env:
        teams = env.teams["oncall"]
        base = f"http://127.0.0.1:{env.daemon.api_port}"
        await env.publish("casing_pressure", 150.0)
        await teams.wait_requests(1)
        link = next(a["url"] for a in cards(teams)[0]["actions"] if a["title"] == "Acknowledge")
        local = base + link.removeprefix(PUBLIC_URL)
        async with httpx.AsyncClient(timeout=20) as anon:
            page = await anon.get(local)
            assert page.status_code == 200 and "Acknowledge alarm?" in page.text
            assert env.rt.core.alarms[AID].record.state.value == "UNACK_ACTIVE", "a GET never acts"
            done = await anon.post(local, content=urllib.parse.urlencode({"user": "Ann", "comment": "ok"}),
                                   headers={"content-type": "application/x-www-form-urlencoded"})
            assert done.status_code == 200 and "Acknowledged" in done.text
            assert env.rt.core.alarms[AID].record.acked_by == "Ann (ack link)"
            again = await anon.post(local, content=b"", headers={"content-type": "application/x-www-form-urlencoded"})
            assert again.status_code == 200 and "Already acknowledged" in again.text
            bad = await anon.get(local.replace("&s=", "&s=x"))
            assert bad.status_code == 403
        assert env.kinds(AID) == ["ACTIVATED", "ACKED"]
        h_read = {"Authorization": f"Bearer {read}"}
        h_ack = {"Authorization": f"Bearer {ack}"}
        async with httpx.AsyncClient(base_url=base, timeout=20) as c:
            url = "/v1/tenants/acme/alarms"
            active = (await c.get(f"{url}/active", headers=h_read)).json()["items"]
            assert [a["alarm_id"] for a in active] == [AID] and active[0]["state"] == "ACK_ACTIVE"
            r = await c.post(f"{url}/shelve", headers=h_read, json={"alarm_id": AID, "reason": "x", "duration": "5m"})
            assert r.status_code == 403, "read scope cannot shelve"
            r = await c.post(f"{url}/shelve", headers=h_ack, json={"alarm_id": AID, "reason": "pump swap",
                                                                   "duration": "5m"})
            assert r.status_code == 200 and r.json()["alarm"]["display_state"] == "SHELVED"
            r = await c.post(f"{url}/unshelve", headers=h_ack, json={"alarm_id": AID})
            assert r.status_code == 200 and r.json()["alarm"]["shelved"] is None
            r = await c.post(f"{url}/unshelve", headers=h_ack, json={"alarm_id": AID})
            assert r.status_code == 409
            r = await c.post(f"{url}/out-of-service", headers=h_ack,
                             json={"alarm_id": AID, "out_of_service": True, "reason": "transmitter swap MOC-9"})
            assert r.status_code == 200 and r.json()["alarm"]["display_state"] == "OUT_OF_SERVICE"
            r = await c.post(f"{url}/ack", headers=h_ack, json={"alarm_id": "casing@nope"})
            assert r.status_code == 404
            hist = (await c.get(f"{url}/history", headers=h_read, params={"limit": "2"})).json()
            assert [e["kind"] for e in hist["items"]] == ["REMOVED_FROM_SERVICE", "REANNUNCIATED"]
            nxt = (await c.get(f"{url}/history", headers=h_read, params={"limit": "10", "cursor": hist["next"]})).json()
            assert [e["kind"] for e in nxt["items"]] == ["UNSHELVED", "SHELVED", "ACKED", "ACTIVATED"]
            assert nxt["next"] is None
            k = (await c.get(f"{url}/kpis", headers=h_read, params={"start": "-1h"})).json()["kpis"]
            assert k["annunciated"] == 2 and k["priority_pct"] == {"high": 100.0}, "raise + re-annunciation"
    assert isinstance(env.ext, AlarmExtension)
