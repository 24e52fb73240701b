"""Compile a source config into its poll program: the planned reads and a decoder per group of values.

Pure. Compiled once per (re)start so that a poll does no planning and no per-tag Python work for numeric
values. Output rows are laid out so that every read request (and every unit) owns a contiguous run of
rows, and every decoder group a contiguous run inside its request: a failed request marks one slice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .config import BIT_KINDS, ModbusSourceConfig, ModbusTagConfig
from .decode import BitGroup, CoilGroup, Group, NumericGroup, StringGroup
from .plan import Item, Limits, plan

__all__ = ["Program", "ReadOp", "UnitProgram", "compile_program"]


@dataclass(frozen=True, slots=True)
class ReadOp:
    """One read request and how to decode its answer into rows ``[start, stop)``."""

    unit: int
    kind: str
    address: int
    count: int
    start: int
    stop: int
    groups: tuple[Group, ...]

    @property
    def bits(self) -> bool:
        return self.kind in BIT_KINDS

    def describe(self) -> str:
        return f"unit {self.unit} {self.kind} {self.address}+{self.count}"


@dataclass(frozen=True, slots=True)
class UnitProgram:
    unit: int
    device: str
    """Device label used in status events (``unit<N>``)."""
    timeout: float
    reads: tuple[ReadOp, ...]
    start: int
    stop: int
    points: tuple[int, ...]
    """Point indexes of this unit's tags."""


@dataclass(frozen=True, slots=True)
class Program:
    units: tuple[UnitProgram, ...]
    keys: npt.NDArray[np.int32]
    """Point index of every output row."""

    @property
    def rows(self) -> int:
        return int(self.keys.shape[0])

    @property
    def requests(self) -> int:
        return sum(len(u.reads) for u in self.units)


def compile_program(cfg: ModbusSourceConfig, points: Sequence[int]) -> Program:
    """``points[i]`` is the point index of ``cfg.tags[i]``."""
    if len(points) != len(cfg.tags):
        raise ValueError(f"{len(points)} point indexes for {len(cfg.tags)} tags")
    resolved = cfg.resolved()
    items = [Item(i, r.unit, r.kind, r.address, r.count) for i, r in enumerate(resolved)]
    limits = Limits(cfg.max_registers, cfg.max_bits, cfg.max_gap, cfg.max_gap_bits)
    requests = plan(items, limits)

    keys: list[int] = []
    by_unit: dict[int, list[ReadOp]] = {}
    for req in requests:
        start = len(keys)
        groups: list[Group] = []
        for ids in _split(req.items, cfg.tags):
            offsets = [resolved[i].address - req.address for i in ids]
            groups.append(_group(len(keys), ids, offsets, cfg.tags))
            keys.extend(points[i] for i in ids)
        by_unit.setdefault(req.unit, []).append(
            ReadOp(req.unit, req.kind, req.address, req.count, start, len(keys), tuple(groups)))

    units = []
    for unit, reads in by_unit.items():
        tag_ids = [i for r in requests if r.unit == unit for i in r.items]
        units.append(UnitProgram(unit, f"unit{unit}", cfg.unit_timeout(unit), tuple(reads), reads[0].start,
                                 reads[-1].stop, tuple(sorted(points[i] for i in tag_ids))))
    return Program(tuple(units), np.asarray(keys, dtype=np.int32))


def _group_key(tag: ModbusTagConfig) -> tuple[str, str]:
    if tag.type in ("bool", "bit", "string"):
        return (tag.type, "")
    return (tag.type, tag.byte_order)


def _split(item_ids: Sequence[int], tags: Sequence[ModbusTagConfig]) -> list[list[int]]:
    """Item ids of one request grouped by decoder (same type and byte order), in first-seen order."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i in item_ids:
        groups.setdefault(_group_key(tags[i]), []).append(i)
    return list(groups.values())


def _group(row: int, ids: Sequence[int], offsets: Sequence[int], tags: Sequence[ModbusTagConfig]) -> Group:
    """The decoder for tags ``ids`` (same type and byte order) at ``offsets`` within their request."""
    first = tags[ids[0]]
    if first.type == "bool":
        return CoilGroup(row, offsets)
    if first.type == "bit":
        return BitGroup(row, offsets, [tags[i].bit or 0 for i in ids])
    if first.type == "string":
        specs = [(o, tags[i].length or 0, tags[i].byte_order) for o, i in zip(offsets, ids, strict=True)]
        return StringGroup(row, specs)
    return NumericGroup(row, offsets, first.type, first.byte_order)
