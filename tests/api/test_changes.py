"""Change feed: resumable cursor over the batch ledger; no gaps or duplicates while ingest runs."""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

import httpx
import psycopg

from ingestd.api.params import encode_cursor
from tests.support.wait import eventually

from .support import ApiEnv

US = 1_000_000
Key = tuple[str, int, float | None, int]


async def _page(c: httpx.AsyncClient, cursor: str | None, limit: int = 37) -> dict[str, Any]:
    r = await c.get("/v1/tenants/acme/changes", params={"limit": limit, **({"cursor": cursor} if cursor else {})})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _keys(items: list[dict[str, Any]]) -> list[Key]:
    return [(i["tag"], i["ts_us"], i["value"], i["quality"]) for i in items]


async def _table(env: ApiEnv) -> list[Key]:
    rows = await env.query("acme", "SELECT t.name, (extract(epoch FROM r.ts) * 1000000)::bigint, r.value, r.quality "
                                   "FROM readings r JOIN tags t USING (tag_id)")
    return [(str(a), int(b), None if v is None else float(v), int(q)) for a, b, v, q in rows]


async def test_pages_equal_the_table_under_concurrent_ingest(env: ApiEnv) -> None:
    c = env.client("acme_read")
    first = await _page(c, None)
    assert first["items"] == [] and first["has_more"] is False
    cursor = first["cursor"]
    seen: list[Key] = []
    t0 = int(time.time() * US) - 3600 * US
    messages = 60

    async def producer() -> None:
        for i in range(messages):
            items = [{"tag": f"t{j}", "ts": t0 + (i * 20 + j) * US, "value": float(i * 20 + j),
                      **({"value": None, "quality": "bad"} if j == 7 else {})} for j in range(20)]
            await env.send("acme", f"w{i % 3}", items)
            await asyncio.sleep(0)  # interleave with the reader

    task = asyncio.create_task(producer())
    pages = 0
    while not task.done():
        page = await _page(c, cursor)
        seen += _keys(page["items"])
        cursor = page["cursor"]
        pages += 1
    await task
    await env.wait_rows("acme", messages * 20)

    async def drained() -> bool:
        nonlocal cursor
        page = await _page(c, cursor, limit=500)
        seen.extend(_keys(page["items"]))
        cursor = page["cursor"]
        return len(seen) >= messages * 20 and not page["has_more"]

    await eventually(drained, what="change feed caught up")
    dupes = [k for k, n in collections.Counter(seen).items() if n > 1]
    assert dupes == [], "no duplicates across pages"
    table = await _table(env)
    assert len(table) == messages * 20
    assert sorted(seen, key=repr) == sorted(table, key=repr), "the union of the pages is exactly the table"
    assert pages > 1
    assert any(k[2] is None and k[3] == 2 for k in seen), "BAD readings carried with value null"


async def test_cursor_is_resumable_and_stable(env: ApiEnv) -> None:
    t0 = int(time.time() * US) - 3600 * US
    for k in range(10):  # ten separate batches of 20 rows
        await env.ingest("acme", "w1", ["p", "q"], 10, start_us=t0 + k * 10 * US)
    c = env.client("acme_read")
    p1 = await _page(c, None, limit=50)
    p2 = await _page(c, p1["cursor"], limit=50)
    again = await _page(c, p1["cursor"], limit=50)
    assert again["items"] == p2["items"] and again["cursor"] == p2["cursor"], "re-reading a page gives the same page"
    assert p1["batches"] >= 1 and p1["has_more"] and p2["items"]
    assert not set(_keys(p1["items"])) & set(_keys(p2["items"]))
    big = await _page(c, None, limit=100_000)
    assert len(big["items"]) == 200 and big["has_more"] is False
    tail = await _page(c, big["cursor"])
    assert tail["items"] == [] and tail["has_more"] is False
    await env.ingest("acme", "w1", ["p"], 5)
    newer = await eventually(lambda: _more(c, big["cursor"]), what="new batches in the feed")
    assert len(newer) == 5


async def _more(c: httpx.AsyncClient, cursor: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await _page(c, cursor))["items"]
    return items


async def test_expired_and_invalid_cursors(env: ApiEnv) -> None:
    await env.ingest("acme", "w1", ["p"], 10)
    c = env.client("acme_read")
    now = int(time.time() * US)
    week_old = encode_cursor("changes", "acme", {"x": 1, "s": 0, "b": now - 8 * 86400 * US})
    r = await c.get("/v1/tenants/acme/changes", params={"cursor": week_old})
    assert r.status_code == 410 and r.json()["parameter"] == "cursor"
    assert "expired" in r.json()["error"] and "/export" in r.json()["error"]
    r = await c.get("/v1/tenants/acme/changes", params={"since": "-8d"})
    assert r.status_code == 410 and r.json()["parameter"] == "since"
    since = await c.get("/v1/tenants/acme/changes", params={"since": "-1h"})
    assert len(since.json()["items"]) == 10
    for bad in ("garbage", encode_cursor("tags", "acme", {"n": "x"}), encode_cursor("changes", "beta", {"x": 1}),
                encode_cursor("changes", "acme", {"x": "1", "s": 0, "b": now})):
        r = await c.get("/v1/tenants/acme/changes", params={"cursor": bad})
        assert r.status_code == 400 and r.json()["parameter"] == "cursor", bad
    # the ledger is trimmed after 7 days: aged batches leave the feed, newer ones are still served
    await env.query("acme", "UPDATE ingest_batches SET committed_at = committed_at - interval '8 days'")
    await env.daemon.tenants["acme"].run_maintenance(force=True)
    assert (await env.query("acme", "SELECT count(*) FROM ingest_batches"))[0][0] == 0
    fresh = await _page(c, None)
    assert fresh["items"] == []
    await env.ingest("acme", "w1", ["q"], 3)
    newer = await eventually(lambda: _more(c, fresh["cursor"]), what="new batches after trimming")
    assert [i["tag"] for i in newer] == ["w1.q"] * 3


async def test_a_slow_writer_never_causes_a_gap(env: ApiEnv) -> None:
    """A transaction that took its ledger seq first but commits last (another ingestd instance, a slow
    replay): a seq-ordered feed would skip it; ours waits for it, then serves it."""
    await env.ingest("acme", "w1", ["p"], 5)
    c = env.client("acme_read")
    page = await _page(c, None, limit=1000)
    assert len(page["items"]) == 5
    cursor = page["cursor"]
    slow = await psycopg.AsyncConnection.connect(env.dbs["acme"].dsn)
    try:
        seq = (await (await slow.execute(
            "INSERT INTO ingest_batches (batch_key, source, rows, min_ts, max_ts) "
            "VALUES (gen_random_uuid(), 'slow', 1, now(), now()) RETURNING seq")).fetchone())
        assert seq is not None
        await slow.execute("INSERT INTO readings (tag_id, ts, value, quality, status, batch_seq) "
                           "SELECT tag_id, now(), 42, 0, 0, %s FROM tags WHERE name = 'w1.p'", (seq[0],))
        await env.ingest("acme", "w1", ["q"], 4)  # committed after the slow batch took its seq
        held = await _page(c, cursor, limit=1000)
        assert held["items"] == [], "batches above the open transaction's txid wait for it"
        cursor = held["cursor"]
        await slow.commit()
    finally:
        await slow.close()
    seen: list[Key] = []

    async def drained() -> bool:
        nonlocal cursor
        p = await _page(c, cursor, limit=1000)
        seen.extend(_keys(p["items"]))
        cursor = p["cursor"]
        return len(seen) >= 5

    await eventually(drained, what="slow batch and later batches served")
    assert sorted(k[0] for k in seen) == ["w1.p"] + ["w1.q"] * 4
    assert (await _page(c, cursor))["items"] == []
