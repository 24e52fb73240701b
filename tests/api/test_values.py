"""Tags, latest values and series on both storage tiers, with data ingested by the daemon over MQTT."""

from __future__ import annotations

import time

import pytest

from .support import ApiEnv

US = 1_000_000


async def test_tags_search_and_pages(env: ApiEnv) -> None:
    await env.ingest("acme", "w1", ["tubing_pressure", "casing_pressure", "flow"], 2)
    await env.ingest("acme", "w2", ["tubing_pressure"], 2)
    await env.ingest("beta", "w9", ["secret"], 2)
    c = env.client("acme_read")
    names: list[str] = []
    cursor = None
    while True:
        params = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        page = (await c.get("/v1/tenants/acme/tags", params=params)).json()
        names += [t["name"] for t in page["items"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert names == ["w1.casing_pressure", "w1.flow", "w1.tubing_pressure", "w2.tubing_pressure"]
    glob = (await c.get("/v1/tenants/acme/tags", params={"match": "w?.tubing_*"})).json()
    assert [t["name"] for t in glob["items"]] == ["w1.tubing_pressure", "w2.tubing_pressure"]
    sub = (await c.get("/v1/tenants/acme/tags", params={"q": "CASING"})).json()
    assert [t["name"] for t in sub["items"]] == ["w1.casing_pressure"]
    item = sub["items"][0]
    assert item["source"] == "field_acme" and item["live"] is True and item["unit"] == ""
    assert (await c.get("/v1/tenants/acme/tags", params={"source": "field_beta"})).json()["items"] == []
    assert (await c.get("/v1/tenants/acme/tags", params={"q": "%"})).json()["items"] == [], "LIKE escaped"


async def test_latest_values_quality_and_staleness(env: ApiEnv) -> None:
    now = int(time.time() * US)
    await env.send("acme", "w1", [{"tag": "p", "ts": now - 10 * US, "value": 812.5},
                                  {"tag": "p", "ts": now - 5 * US, "value": 813.0},
                                  {"tag": "q", "ts": now - 600 * US, "value": 3.0},
                                  {"tag": "bad", "ts": now - 1 * US, "value": None, "quality": "bad"}])
    await env.wait_rows("acme", 4)
    c = env.client("acme_read")
    r = (await c.get("/v1/tenants/acme/latest", params={"tag": ["w1.p", "w1.q", "w1.bad", "w1.nope"],
                                                      "max_age": "5m"})).json()
    by = {i["tag"]: i for i in r["items"]}
    assert r["missing"] == ["w1.nope"]
    assert by["w1.p"]["value"] == 813.0 and by["w1.p"]["quality"] == 0 and by["w1.p"]["ts_us"] == now - 5 * US
    assert by["w1.p"]["recv_us"] >= now - 1 * US and by["w1.p"]["stale"] is False
    assert 4 < by["w1.p"]["age_s"] < 60
    assert by["w1.q"]["stale"] is True, "older than max_age"
    assert by["w1.bad"]["value"] is None and by["w1.bad"]["quality"] == 2
    # many tags at once, in the body
    tags = [f"t{i:04d}" for i in range(1000)]
    await env.send("acme", "w3", [{"tag": t, "ts": now, "value": float(i)} for i, t in enumerate(tags)])
    await env.wait_rows("acme", 1004)
    bulk = (await c.post("/v1/tenants/acme/latest", json={"tags": [f"w3.{t}" for t in tags]})).json()
    assert [i["value"] for i in bulk["items"]] == [float(i) for i in range(1000)]
    paged = (await c.get("/v1/tenants/acme/latest", params={"match": "w3.*", "limit": 600})).json()
    assert len(paged["items"]) == 600 and paged["next"]
    params = {"match": "w3.*", "limit": 600, "cursor": paged["next"]}
    rest = (await c.get("/v1/tenants/acme/latest", params=params)).json()
    assert len(rest["items"]) == 400 and rest["next"] is None


async def test_series_raw_and_downsampled(env: ApiEnv) -> None:
    start = int(time.time() * US) - 3000 * US
    await env.ingest("acme", "w1", ["p"], 2000, start_us=start, step_us=US)
    c = env.client("acme_read")
    params = {"tag": "w1.p", "start": "-1h", "resolution": "raw", "max_points": 5000}
    raw = (await c.get("/v1/tenants/acme/series", params=params)).json()
    s = raw["items"][0]
    assert s["resolution"] == "raw" and s["downsampled"] is None and len(s["ts_us"]) == 2000
    assert s["value"][:3] == [0.0, 1.0, 2.0] and s["ts_us"][0] == start and set(s["quality"]) == {0}
    for how in ("minmax", "lttb"):
        d = (await c.get("/v1/tenants/acme/series", params={**params, "max_points": 100, "downsample": how})).json()
        s = d["items"][0]
        assert s["downsampled"] == how and 2 < len(s["ts_us"]) <= 100
        assert min(s["value"]) == 0.0 and max(s["value"]) == 1999.0
        assert s["ts_us"] == sorted(s["ts_us"])
    auto = (await c.get("/v1/tenants/acme/series", params={"tag": "w1.p", "start": "-1h", "max_points": 3000}))
    assert auto.json()["items"][0]["resolution"] == "raw", "2000 raw points fit in max_points"
    auto = (await c.get("/v1/tenants/acme/series", params={"tag": "w1.p", "start": "-1h", "max_points": 1000}))
    assert auto.json()["items"][0]["resolution"] == "1m", "2000 raw points do not fit: minute buckets do"


async def test_series_without_rollups_aggregates_in_sql(env: ApiEnv) -> None:
    """A database without rollup relations (migrated by an older ingestd, rollups dropped) still answers."""
    for rel in ("readings_1d", "readings_1h", "readings_1m"):
        await env.query("acme", f"DROP TABLE IF EXISTS {rel} CASCADE")
    start = int(time.time() * US) - 7200 * US
    await env.ingest("acme", "w1", ["p"], 1200, start_us=start, step_us=5 * US)  # 100 minutes of 5 s data
    c = env.client("acme_read")
    r = (await c.get("/v1/tenants/acme/series", params={"tag": ["w1.p", "w1.none"], "start": "-3h",
                                                      "max_points": 200})).json()
    assert r["missing"] == ["w1.none"]
    s = r["items"][0]
    assert s["resolution"] == "1m" and s["downsampled"] == "sql" and s["bucket_s"] == 60.0
    assert sum(s["count"]) == 1200 and len(s["ts_us"]) <= 200
    assert s["min"][0] == 0.0 and s["max"][-1] == 1199.0
    assert all(t % (60 * US) == 0 for t in s["ts_us"])
    h = (await c.get("/v1/tenants/acme/series", params={"tag": "w1.p", "start": "-3h", "resolution": "1h"})).json()
    assert h["items"][0]["resolution"] == "1h" and sum(h["items"][0]["count"]) == 1200


async def test_series_reads_rollups_and_fills_the_unfolded_tail(env: ApiEnv) -> None:
    start = int(time.time() * US) - 7200 * US
    await env.ingest("acme", "w1", ["p"], 600, start_us=start, step_us=10 * US)  # first 100 minutes
    await env.daemon.tenants["acme"].run_maintenance(force=True)  # the rollup refresher folds them
    assert (await env.query("acme", "SELECT sum(count) FROM readings_1m"))[0][0] == 600
    await env.query("acme", "UPDATE readings_1m SET max = 1e9 WHERE bucket = (SELECT min(bucket) FROM readings_1m)")
    await env.ingest("acme", "w1", ["p"], 100, start_us=start + 6000 * US, step_us=10 * US)  # not folded yet
    c = env.client("acme_read")
    s = (await c.get("/v1/tenants/acme/series", params={"tag": "w1.p", "start": "-3h", "max_points": 500})).json()
    item = s["items"][0]
    assert item["resolution"] == "1m" and item["downsampled"] is None
    assert max(item["max"]) == 1e9, "answered from the rollup relation"
    assert sum(item["count"]) == 700, "buckets with unfolded readings are computed from raw readings"
    assert item["ts_us"] == sorted(item["ts_us"]) and len(set(item["ts_us"])) == len(item["ts_us"])
    coarse = (await c.get("/v1/tenants/acme/series", params={"tag": "w1.p", "start": "-3h", "resolution": "1m",
                                                           "max_points": 10})).json()["items"][0]
    assert coarse["downsampled"] == "rebucket" and len(coarse["ts_us"]) <= 10 and sum(coarse["count"]) == 700
    hourly = (await c.get("/v1/tenants/acme/series", params={"tag": "w1.p", "start": "-3h",
                                                           "resolution": "1h"})).json()["items"][0]
    assert hourly["resolution"] == "1h" and sum(hourly["count"]) == 700


@pytest.mark.parametrize(("params", "parameter"), [
    ({"tag": "w1.p", "max_points": "0"}, "max_points"),
    ({"tag": "w1.p", "max_points": "lots"}, "max_points"),
    ({"tag": "w1.p", "resolution": "5m"}, "resolution"),
    ({"tag": "w1.p", "start": "yesterday"}, "start"),
    ({"tag": "w1.p", "start": "-1h", "end": "-2h"}, "end"),
    ({"tag": "bad tag!"}, "tag[0]"),
    ({}, "tag"),
    ({"tag": "w1.p", "downsample": "median"}, "downsample"),
])
async def test_series_bad_parameters(env1: ApiEnv, params: dict[str, str], parameter: str) -> None:
    r = await env1.client("acme_read").get("/v1/tenants/acme/series", params=params)
    assert r.status_code == 400, r.text
    assert r.json()["parameter"] == parameter and r.json()["error"]
