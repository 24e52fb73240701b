"""ML export: CSV/NDJSON with quality and status, streamed in keyset pages with bounded memory."""

from __future__ import annotations

import csv
import io
import time
import tracemalloc

import orjson

from .support import ApiEnv

US = 1_000_000


async def test_csv_and_ndjson_content(env: ApiEnv) -> None:
    t0 = int(time.time() * US) - 600 * US
    await env.send("acme", "w1", [{"tag": "p", "ts": t0 + i * US, "value": i * 1.5} for i in range(5)]
                   + [{"tag": "p", "ts": t0 + 5 * US, "value": None, "quality": "bad"},
                      {"tag": "q", "ts": t0, "value": 7.0, "quality": "uncertain"}])
    await env.wait_rows("acme", 7)
    c = env.client("acme_read")
    r = await c.get("/v1/tenants/acme/export", params={"match": "w1.*", "start": "-1h"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert 'filename="acme-export.csv"' in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [(x["tag"], x["value"], x["quality"]) for x in rows] == [
        ("w1.p", "0.0", "0"), ("w1.p", "1.5", "0"), ("w1.p", "3.0", "0"), ("w1.p", "4.5", "0"), ("w1.p", "6.0", "0"),
        ("w1.p", "", "2"), ("w1.q", "7.0", "1")]
    assert rows[0]["ts"].endswith("Z") and rows[0]["status"] == "0"
    nd = await c.get("/v1/tenants/acme/export", params={"tag": "w1.p", "start": "-1h", "format": "ndjson",
                                                       "quality": "good"})
    assert nd.headers["content-type"] == "application/x-ndjson"
    docs = [orjson.loads(line) for line in nd.text.splitlines()]
    assert len(docs) == 5 and docs[0]["ts_us"] == t0 and docs[0]["value"] == 0.0 and docs[0]["quality"] == 0
    not_bad = await c.get("/v1/tenants/acme/export", params={"match": "w1.*", "start": "-1h", "format": "ndjson",
                                                            "quality": "not_bad"})
    assert len(not_bad.text.splitlines()) == 6
    empty = await c.get("/v1/tenants/acme/export", params={"tag": "w1.none", "start": "-1h"})
    assert empty.status_code == 200 and empty.text == "tag,ts,value,quality,status\n"
    for params, parameter in (({"start": "-1h"}, "tag"), ({"tag": "w1.p", "format": "xlsx"}, "format"),
                              ({"tag": "w1.p", "quality": "best"}, "quality")):
        bad = await c.get("/v1/tenants/acme/export", params=params)
        assert bad.status_code == 400 and bad.json()["parameter"] == parameter


async def test_streaming_600k_rows_keeps_memory_bounded(env: ApiEnv) -> None:
    await env.ingest("acme", "w1", ["seed"], 1)  # the daemon created the schema (and partitions)
    await env.query("acme", "INSERT INTO tags (name) SELECT 'bulk.t' || i FROM generate_series(0, 9) i")
    await env.query("acme", """
        INSERT INTO readings (tag_id, ts, value, quality, status)
        SELECT t.tag_id, now() - interval '16 hours' + g * interval '500 milliseconds', g * 0.5,
               CASE WHEN g % 1000 = 0 THEN 2 ELSE 0 END, 0
        FROM tags t, generate_series(0, 59999) g WHERE t.name LIKE 'bulk.%'""")
    c = env.client("acme_read")
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        lines = 0
        size = 0
        async with c.stream("GET", "/v1/tenants/acme/export", params={"match": "bulk.*", "start": "-1d"}) as r:
            assert r.status_code == 200
            async for chunk in r.aiter_raw():
                lines += chunk.count(b"\n")
                size += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert lines == 600_001  # header + rows
    assert size > 20_000_000
    print(f"export: peak {peak / 1e6:.1f} MB while streaming {size / 1e6:.0f} MB")
    assert peak < 24 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB while streaming {size / 1e6:.0f} MB"
