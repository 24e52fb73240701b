"""The simulated well field (pure model): reproducible, physically plausible, and it trips its alarm."""

from __future__ import annotations

import pytest

from ingestd.sim.layout import TAGS, Layout, alarm_well
from simulator.field import Field
from simulator.modbus import encode_registers


def run(field: Field, seconds: int, t0: float = 1_700_000_000.0) -> list[dict[int, dict[str, float]]]:
    out = []
    for i in range(seconds):
        field.step(t0 + i)
        out.append({n: dict(field.values(n)) for n in field.wells})
    return out


def test_same_seed_same_field() -> None:
    assert run(Field(5, seed=3), 50) == run(Field(5, seed=3), 50)
    assert run(Field(5, seed=3), 50) != run(Field(5, seed=4), 50)


def test_values_are_plausible_over_an_hour() -> None:
    history = run(Field(20, seed=1, faults=False), 3600)
    for n in range(1, 21):
        series = [h[n] for h in history]
        assert set(series[0]) == set(TAGS)
        running = [s for s in series if s["pump_running"] == 1.0]
        stopped = [s for s in series if s["pump_running"] == 0.0]
        assert running and stopped, "the pump-off controller cycles the pump"
        assert all(s["flow_rate"] == 0.0 and s["spm"] == 0.0 for s in stopped)
        assert all(3.0 <= s["spm"] <= 12.0 for s in running)
        assert all(0.0 <= s["tank_level"] <= 18.5 for s in series)
        assert all(50.0 <= s["tubing_pressure"] <= 300.0 for s in series)
        if n != alarm_well(20):
            assert all(200.0 <= s["casing_pressure"] <= 1000.0 for s in series)


def test_the_alarm_well_trips_its_high_limit_within_the_first_minute() -> None:
    history = run(Field(20, seed=1, faults=False), 60)
    casing = [h[alarm_well(20)]["casing_pressure"] for h in history]
    assert casing[0] < 950.0 and max(casing) > 1050.0


def test_comm_faults_come_and_go() -> None:
    field = Field(20, seed=2)
    faulted = []
    for i in range(1800):
        field.step(1_700_000_000.0 + i)
        faulted.append(sum(field.faulted(n) for n in field.wells))
    assert max(faulted) >= 1 and faulted[-1] < 20


@pytest.mark.parametrize(("wells", "protocols", "expected"), [
    (20, ["mqtt"], {"mqtt": list(range(1, 21))}),
    (20, ["mqtt", "modbus", "opcua", "sparkplug"],
     {"opcua": [1, 2, 3, 4, 5], "modbus": [6, 7, 8, 9, 10], "sparkplug": [11, 12, 13, 14, 15],
      "mqtt": [16, 17, 18, 19, 20]}),
    (5, ["mqtt", "modbus"], {"modbus": [1, 2, 3], "mqtt": [4, 5]}),
])
def test_wells_are_dealt_to_the_protocols_in_use(wells: int, protocols: list[str],
                                                 expected: dict[str, list[int]]) -> None:
    layout = Layout.of(wells, protocols)
    assert {p: layout.wells_of(p) for p in layout.protocols} == expected
    assert all(layout.protocol_of(w) == p for p, ws in expected.items() for w in ws)


def test_modbus_registers_encode_float32_big_endian() -> None:
    regs = encode_registers({"tubing_pressure": 812.5, "casing_pressure": 40.0, "flow_rate": 0.0, "spm": 7.5,
                             "tank_level": 12.25, "pump_running": 1.0})
    assert regs[0:2] == [0x444B, 0x2000] and regs[10] == 1 and len(regs) == 11
