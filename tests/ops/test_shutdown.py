"""An adapter that ignores cancellation is reported, and neither shutdown nor reload hangs on it."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Literal

import pytest

import ingestd.daemon
from ingestd.config.base import SourceConfig
from ingestd.config.load import parse_config
from ingestd.daemon import Daemon
from ingestd.ports import AdapterRegistry, AdapterSpec, SourceContext
from tests.conftest import TenantDb
from tests.ops.helpers import eventually


class StubbornConfig(SourceConfig):
    protocol: Literal["stubborn"]


class StubbornSource:
    """Swallows CancelledError (a real bug seen in adapters wrapping callback libraries)."""

    release: asyncio.Event

    def __init__(self, cfg: StubbornConfig) -> None:
        self.cfg = cfg

    async def run(self, ctx: SourceContext) -> None:
        ctx.status.up()
        while not self.release.is_set():
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                continue


REGISTRY = AdapterRegistry([AdapterSpec("stubborn", f"{__name__}:StubbornConfig", f"{__name__}:StubbornSource")])


async def test_stop_does_not_wait_forever_for_a_stubborn_source(apache_db: TenantDb, state_dir: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(ingestd.daemon, "_SOURCE_STOP_TIMEOUT", 0.3)
    StubbornSource.release = asyncio.Event()
    caplog.set_level(logging.INFO, logger="ingestd.daemon")
    cfg = parse_config({"daemon": {"state_dir": str(state_dir), "metrics_listen": "127.0.0.1:0"},
                        "tenants": [{"slug": "acme", "dsn": apache_db.dsn}],
                        "sources": [{"name": "mule", "protocol": "stubborn"}, {"name": "ok", "protocol": "stubborn"}]},
                       REGISTRY)
    d = Daemon(cfg, REGISTRY)
    task = asyncio.create_task(d.run())
    try:
        await asyncio.wait_for(d.ready.wait(), 30)
        await eventually(lambda: d.sources["mule"].device_up.get(""), "the source running")
        await d.apply_config(cfg.model_copy(update={"sources": cfg.sources[1:]}))
        assert "mule" not in d.sources
        assert "source mule did not stop within 0.3s of being cancelled" in caplog.text
        d.request_stop()
        await asyncio.wait_for(task, 10)
        assert caplog.text.count("did not stop within") == 2
        assert any(r.levelno == logging.INFO and r.getMessage() == "ingestd stopped" for r in caplog.records)
    finally:
        StubbornSource.release.set()  # let the abandoned tasks end with the test
