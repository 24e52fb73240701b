"""Request planning: coalesce the configured values into as few read requests as the protocol allows.

Pure and deterministic. Reads are planned per (unit id, register kind); within one group the values are
sorted by address and packed greedily from the lowest address: a value joins the current request when
the unused registers between it and the request's end do not exceed ``max_gap`` and the request stays
within the protocol limit (125 registers, 2,000 coils/discrete inputs, or less if configured). Values
may overlap (several bits of one register, or one register read as two types).

>>> plan([Item(0, 1, "holding", 100, 2), Item(1, 1, "holding", 104, 1)], Limits())
[Request(unit=1, kind='holding', address=100, count=5, items=(0, 1))]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = ["KIND_ORDER", "PROTOCOL_MAX_BITS", "PROTOCOL_MAX_REGISTERS", "Item", "Limits", "Request", "plan"]

PROTOCOL_MAX_REGISTERS: Final = 125
PROTOCOL_MAX_BITS: Final = 2000
KIND_ORDER: Final = {"coil": 0, "discrete": 1, "holding": 2, "input": 3}
_BIT_KINDS: Final = frozenset({"coil", "discrete"})


@dataclass(frozen=True, slots=True)
class Item:
    """One value to read: ``count`` registers (or bits) from ``address`` of ``kind`` on ``unit``."""

    id: int
    unit: int
    kind: str
    address: int
    count: int

    @property
    def end(self) -> int:
        return self.address + self.count


@dataclass(frozen=True, slots=True)
class Limits:
    max_registers: int = PROTOCOL_MAX_REGISTERS
    max_bits: int = PROTOCOL_MAX_BITS
    max_gap: int = 10
    """Unused registers allowed between two values read by one request."""
    max_gap_bits: int = 64
    """Unused coils/discrete inputs allowed between two values read by one request."""

    def size(self, kind: str) -> int:
        return self.max_bits if kind in _BIT_KINDS else self.max_registers

    def gap(self, kind: str) -> int:
        return self.max_gap_bits if kind in _BIT_KINDS else self.max_gap


@dataclass(frozen=True, slots=True)
class Request:
    unit: int
    kind: str
    address: int
    count: int
    items: tuple[int, ...]
    """Ids of the items this request serves, in address order."""

    @property
    def end(self) -> int:
        return self.address + self.count


def plan(items: Iterable[Item], limits: Limits) -> list[Request]:
    """Requests covering every item, ordered by unit id, then coil/discrete/holding/input, then address.

    Raises ``ValueError`` for an item that cannot be read by one request (bigger than the limit, or
    outside the 16-bit address space); config validation rejects those first.
    """
    groups: dict[tuple[int, str], list[Item]] = {}
    for it in items:
        size = limits.size(it.kind)
        if it.count < 1 or it.count > size:
            raise ValueError(f"item {it.id}: {it.count} registers do not fit one request (limit {size})")
        if it.address < 0 or it.end > 65536:
            raise ValueError(f"item {it.id}: {it.address}+{it.count} is outside the address space")
        groups.setdefault((it.unit, it.kind), []).append(it)
    out: list[Request] = []
    for unit, kind in sorted(groups, key=lambda g: (g[0], KIND_ORDER.get(g[1], 9), g[1])):
        out.extend(_pack(unit, kind, groups[(unit, kind)], limits.size(kind), limits.gap(kind)))
    return out


def _pack(unit: int, kind: str, items: Sequence[Item], size: int, gap: int) -> list[Request]:
    ordered = sorted(items, key=lambda it: (it.address, -it.count, it.id))
    out: list[Request] = []
    start = end = -1
    ids: list[int] = []
    for it in ordered:
        if ids and it.address - end <= gap and max(end, it.end) - start <= size:
            end = max(end, it.end)
            ids.append(it.id)
            continue
        if ids:
            out.append(Request(unit, kind, start, end - start, tuple(ids)))
        start, end, ids = it.address, it.end, [it.id]
    if ids:
        out.append(Request(unit, kind, start, end - start, tuple(ids)))
    return out
