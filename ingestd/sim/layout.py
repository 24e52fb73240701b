"""Where each simulated well lives: protocol, Modbus unit and registers, OPC UA node ids, topics.

Shared by the demo's config generator and the simulator process, so both sides agree by construction.
Wells are named ``well_01`` … and carry the same six tags whatever the protocol:

============== ===== ==========================================================
tag            unit  meaning
============== ===== ==========================================================
tubing_pressure psi  wellhead tubing pressure
casing_pressure psi  casing pressure (gas builds while the pump is off)
flow_rate      bbl/d liquid rate at the wellhead
spm            1/min pump strokes per minute (0 when the pump is off)
tank_level     ft    level of the well's stock tank (drops when a truck hauls)
pump_running   –     1 while the rod pump runs, 0 when the pump-off controller stops it
============== ===== ==========================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "ALARM_WELL",
    "MODBUS_REGISTERS",
    "MQTT_TOPIC",
    "OPCUA_NAMESPACE",
    "PROTOCOL_ORDER",
    "SPARKPLUG_GROUP",
    "SPARKPLUG_NODE",
    "TAGS",
    "UNITS",
    "Layout",
    "alarm_well",
    "well_name",
]

TAGS: Final = ("tubing_pressure", "casing_pressure", "flow_rate", "spm", "tank_level", "pump_running")
UNITS: Final = {"tubing_pressure": "psi", "casing_pressure": "psi", "flow_rate": "bbl/d", "spm": "1/min",
                "tank_level": "ft", "pump_running": ""}
PROTOCOL_ORDER: Final = ("opcua", "modbus", "sparkplug", "mqtt")
"""Wells are dealt to the protocols in use in this order, in equal blocks."""

MODBUS_REGISTERS: Final = {"tubing_pressure": 0, "casing_pressure": 2, "flow_rate": 4, "spm": 6, "tank_level": 8,
                           "pump_running": 10}
"""Holding register of each tag: float32 big-endian word order (ABCD); ``pump_running`` is a uint16.
Each Modbus well is its own unit id (its well number) behind one simulated TCP gateway."""
MODBUS_REGISTER_COUNT: Final = 11

OPCUA_NAMESPACE: Final = "urn:wellos:demo:field"
"""OPC UA node ids are ``nsu=urn:wellos:demo:field;s=well_01.tubing_pressure``."""

MQTT_TOPIC: Final = "demo/wells/{well}"
"""MQTT JSON: one message per well and second, ``{"ts": <ms>, "values": {"tubing_pressure": …}}``."""

SPARKPLUG_GROUP: Final = "demo"
SPARKPLUG_NODE: Final = "rtu_sparkplug"
"""Sparkplug B: one edge node, one device per well, one metric per tag."""

ALARM_WELL: Final = 7
"""This well's casing pressure climbs past its high limit a few seconds into every demo cycle."""


def well_name(n: int) -> str:
    return f"well_{n:02d}"


def alarm_well(wells: int) -> int:
    return min(ALARM_WELL, wells)


@dataclass(frozen=True)
class Layout:
    wells: int
    protocols: tuple[str, ...]
    """Protocols in use, in :data:`PROTOCOL_ORDER`."""

    @classmethod
    def of(cls, wells: int, protocols: Sequence[str]) -> Layout:
        if wells < 1:
            raise ValueError("the field needs at least one well")
        used = tuple(p for p in PROTOCOL_ORDER if p in protocols)
        if not used:
            raise ValueError(f"no known protocol among {list(protocols)} (known: {list(PROTOCOL_ORDER)})")
        return cls(wells, used)

    def wells_of(self, protocol: str) -> list[int]:
        """Well numbers (1-based) served over ``protocol``: consecutive blocks, the remainder to the first."""
        if protocol not in self.protocols:
            return []
        k = len(self.protocols)
        size, extra = divmod(self.wells, k)
        start = 1
        for i, p in enumerate(self.protocols):
            n = size + (1 if i < extra else 0)
            if p == protocol:
                return list(range(start, start + n))
            start += n
        return []

    def protocol_of(self, well: int) -> str:
        for p in self.protocols:
            if well in self.wells_of(p):
                return p
        raise ValueError(f"well {well} is not in the field (1..{self.wells})")
