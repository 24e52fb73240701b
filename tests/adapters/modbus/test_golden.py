"""Golden, data-driven cases (Telegraf style): ``testcases/<what-it-pins>/``.

Each folder holds ``config.toml`` (a ``[[sources]]`` fragment, loaded through the real config loader),
and either ``registers.json`` + ``expected.json`` with ``requests`` (the reads the first poll makes:
``[unit, register, address, count]``) and ``rows`` (``tag: [value or null, quality, status]``), or an
``expected.json`` with the exact ``errors`` the loader reports. ``registers.json`` maps unit id → register
kind → start address → values, plus optional ``exceptions`` (``unit``/``register``/``address``/``code``).
"""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path
from typing import Any

import pytest

from adapters.modbus.source import ModbusSource
from ingestd.config.load import parse_config
from ingestd.errors import ConfigError
from ingestd.model import Quality
from ingestd.testing import RecordingContext

from .support import REGISTRY, TENANTS, FakeDevice, batches_with, rows_of, running

CASES = sorted(p for p in (Path(__file__).parent / "testcases").iterdir() if p.is_dir())


def _device(spec: dict[str, Any]) -> FakeDevice:
    registers: dict[tuple[int, str], dict[int, int | bool]] = {}
    for unit, kinds in spec.items():
        if unit == "exceptions":
            continue
        for kind, blocks in kinds.items():
            table = registers.setdefault((int(unit), kind), {})
            for start, values in blocks.items():
                table.update({int(start) + i: v for i, v in enumerate(values)})
    dev = FakeDevice(registers)
    for e in spec.get("exceptions", []):
        dev.script[(e["unit"], e["register"], e["address"])] = [e["code"]]
    return dev


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_golden(case: Path) -> None:
    data = tomllib.loads((case / "config.toml").read_text(encoding="utf-8"))
    expected = json.loads((case / "expected.json").read_text(encoding="utf-8"))
    if "errors" in expected:
        with pytest.raises(ConfigError) as info:
            parse_config({"tenants": TENANTS, **data}, REGISTRY)
        assert [str(p) for p in info.value.problems] == expected["errors"]
        return

    cfg = parse_config({"tenants": TENANTS, **data}, REGISTRY).sources[0]
    cfg = cfg.model_copy(update={"poll_interval": 0.01})  # the case pins decoding, not the schedule
    dev = _device(json.loads((case / "registers.json").read_text(encoding="utf-8")))
    ctx = RecordingContext.for_source(cfg)
    async with running(ModbusSource(cfg, dev.factory), ctx):
        await ctx.wait_for(batches_with(ctx, 1))

    first_poll = dev.calls[:len(expected["requests"])]
    assert [[unit, kind, address, count] for _, unit, kind, address, count in first_poll] == expected["requests"]
    got = {tag: (v, Quality(q).name, s) for tag, v, q, s in rows_of(ctx)[:len(ctx.rec.batches[0])]}
    assert sorted(got) == sorted(expected["rows"])
    for tag, (value, quality, status) in expected["rows"].items():
        v, q, s = got[tag]
        assert (q, s) == (quality, status), tag
        assert math.isnan(v) if value is None else v == value, tag
