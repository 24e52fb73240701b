"""Router: scaling, NaN/inf → BAD, absurd timestamps rejected, multi-tenant split, tokens, listeners."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ingestd.config.model import PipelineConfig, TenantConfig
from ingestd.metrics import Metrics
from ingestd.model import STATUS_NOT_FINITE, Batch, Durability, Quality, now_us
from ingestd.pipeline.router import Router, SourceRoute
from ingestd.pipeline.tags import TagMeta
from ingestd.pipeline.tenant import TenantPipeline
from ingestd.ports import Point


def tenant(slug: str, tmp: Path, m: Metrics) -> TenantPipeline:
    cfg = TenantConfig.model_validate({"slug": slug, "dsn": "postgresql://unused/x"})
    return TenantPipeline(cfg, PipelineConfig(), tmp, m)


def setup(tmp: Path) -> tuple[Router, SourceRoute, TenantPipeline, TenantPipeline, Metrics]:
    m = Metrics()
    a, b = tenant("a", tmp, m), tenant("b", tmp, m)
    route = SourceRoute("src", [a])
    for i, (tp, name, scale, offset) in enumerate([(a, "x", 1.0, 0.0), (a, "y", 0.1, -40.0), (b, "z", 1.0, 0.0)]):
        key = tp.ensure_tag(TagMeta(name))
        route.add(tp, key, Point(i, tp.slug, name, None), scale, offset)
    return Router(PipelineConfig(), m), route, a, b, m


async def test_scaling_nan_and_live_cache(tmp_path: Path) -> None:
    router, route, a, _, m = setup(tmp_path)
    now = now_us()
    await router.route(route, Batch.of([0, 1, 0], [now, now, now + 1], [5.0, 1000.0, np.inf]))
    got = a.inbox.take_nowait()
    assert got is not None
    assert got.value[0] == 5.0
    assert got.value[1] == 60.0  # 1000 * 0.1 - 40
    assert np.isnan(got.value[2]) and got.quality[2] == Quality.BAD and got.status[2] == STATUS_NOT_FINITE
    live = a.registry.live(a.registry.index["x"])
    assert live is not None and live.value is None and live.quality == Quality.BAD and live.ts_us == now + 1
    assert m.malformed.labels("src", "not_finite")._value.get() == 1


async def test_absurd_timestamps_are_rejected(tmp_path: Path) -> None:
    router, route, a, _, m = setup(tmp_path)
    now = now_us()
    await router.route(route, Batch.of([0, 0, 0], [now, now + 3600 * 10**6, 0], [1.0, 2.0, 3.0]))
    got = a.inbox.take_nowait()
    assert got is not None and got.value.tolist() == [1.0]
    assert m.malformed.labels("src", "timestamp_out_of_range")._value.get() == 2


async def test_split_across_tenants_releases_token_once_both_are_durable(tmp_path: Path) -> None:
    router, route, a, b, _ = setup(tmp_path)
    done: list[int] = []
    batch = Batch.of([0, 2], [now_us()] * 2, [1.0, 2.0])
    batch.tokens = [Durability(lambda: done.append(1))]
    seen: list[str] = []
    router.listeners.append(lambda tp, bt: seen.append(tp.slug))
    await router.route(route, batch)
    assert sorted(seen) == ["a", "b"]
    ga, gb = a.inbox.take_nowait(), b.inbox.take_nowait()
    assert ga is not None and gb is not None
    ga.release()
    assert done == []
    gb.release()
    assert done == [1]


async def test_deadband_filtered_batch_releases_its_token(tmp_path: Path) -> None:
    router, route, a, _, m = setup(tmp_path)
    a.ensure_tag(TagMeta("x"), deadband=10.0)
    now = now_us()
    await router.route(route, Batch.of([0], [now], [1.0]))
    done: list[int] = []
    b = Batch.of([0], [now + 1], [1.5])
    b.tokens = [Durability(lambda: done.append(1))]
    await router.route(route, b)
    assert done == [1]
    assert m.points_filtered.labels("a", "src")._value.get() == 1


async def test_historical_batches_are_stored_without_touching_live_state(tmp_path: Path) -> None:
    router, route, a, _, _ = setup(tmp_path)
    seen: list[int] = []
    router.listeners.append(lambda tp, bt: seen.append(len(bt)))
    now = now_us()
    await router.route(route, Batch.of([0], [now], [1.0]))
    hist = Batch.of([0, 0], [now + 10, now + 20], [7.0, 8.0])
    hist.historical = True
    await router.route(route, hist)
    live = a.registry.live(a.registry.index["x"])
    assert live is not None and live.value == 1.0  # backfill never becomes "current"
    assert seen == [1]  # alarm/live listeners only see live data
    stored = a.inbox.take_nowait()
    assert stored is not None and len(stored) == 3
