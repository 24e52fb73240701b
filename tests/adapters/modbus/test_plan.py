"""Request planning: examples plus properties (coverage, limits, gaps, no mergeable neighbours)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.modbus.plan import Item, Limits, Request, plan

KINDS = ("coil", "discrete", "holding", "input")


def test_adjacent_and_small_gaps_are_merged() -> None:
    items = [Item(0, 1, "holding", 100, 2), Item(1, 1, "holding", 102, 1), Item(2, 1, "holding", 110, 4)]
    assert plan(items, Limits(max_gap=7)) == [Request(1, "holding", 100, 14, (0, 1, 2))]


def test_gap_larger_than_max_gap_splits() -> None:
    items = [Item(0, 1, "holding", 100, 2), Item(1, 1, "holding", 111, 1)]
    assert plan(items, Limits(max_gap=8)) == [
        Request(1, "holding", 100, 2, (0,)), Request(1, "holding", 111, 1, (1,)),
    ]


def test_max_gap_zero_reads_only_configured_registers() -> None:
    items = [Item(0, 1, "input", 0, 1), Item(1, 1, "input", 1, 1), Item(2, 1, "input", 3, 1)]
    assert [(r.address, r.count) for r in plan(items, Limits(max_gap=0))] == [(0, 2), (3, 1)]


def test_protocol_limit_125_registers() -> None:
    items = [Item(i, 1, "holding", 2 * i, 2) for i in range(100)]  # 200 contiguous registers
    reqs = plan(items, Limits())
    assert [(r.address, r.count) for r in reqs] == [(0, 124), (124, 76)]  # 62 float32 fit in 125 registers


def test_protocol_limit_2000_bits() -> None:
    items = [Item(i, 1, "coil", i, 1) for i in range(2500)]
    assert [(r.address, r.count) for r in plan(items, Limits())] == [(0, 2000), (2000, 500)]


def test_grouped_by_unit_and_kind_in_a_stable_order() -> None:
    items = [
        Item(0, 2, "holding", 0, 1), Item(1, 1, "input", 0, 1), Item(2, 1, "holding", 0, 1),
        Item(3, 1, "coil", 0, 1), Item(4, 1, "discrete", 0, 1),
    ]
    assert [(r.unit, r.kind) for r in plan(items, Limits())] == [
        (1, "coil"), (1, "discrete"), (1, "holding"), (1, "input"), (2, "holding"),
    ]


def test_overlapping_items_share_a_request() -> None:
    # Two bits of one register and the register itself as uint16.
    items = [Item(0, 1, "holding", 7, 1), Item(1, 1, "holding", 7, 1), Item(2, 1, "holding", 6, 2)]
    assert plan(items, Limits(max_gap=0)) == [Request(1, "holding", 6, 2, (2, 0, 1))]


def test_configured_smaller_limit() -> None:
    items = [Item(i, 1, "holding", i, 1) for i in range(10)]
    assert [(r.address, r.count) for r in plan(items, Limits(max_registers=4))] == [(0, 4), (4, 4), (8, 2)]


def test_oversized_item_is_an_error() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        plan([Item(0, 1, "holding", 0, 126)], Limits())
    with pytest.raises(ValueError, match="outside the address space"):
        plan([Item(0, 1, "holding", 65535, 2)], Limits())


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Item], Limits]:
    limits = Limits(
        max_registers=draw(st.integers(4, 125)), max_bits=draw(st.integers(16, 2000)),
        max_gap=draw(st.integers(0, 40)), max_gap_bits=draw(st.integers(0, 200)),
    )
    n = draw(st.integers(1, 60))
    items = []
    for i in range(n):
        kind = draw(st.sampled_from(KINDS))
        size = limits.size(kind)
        count = draw(st.integers(1, min(size, 8 if kind in ("holding", "input") else 1)))
        address = draw(st.integers(0, min(65536 - count, draw(st.sampled_from([300, 5000, 65535])))))
        items.append(Item(i, draw(st.integers(1, 3)), kind, address, count))
    return items, limits


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_plan_properties(scenario: tuple[list[Item], Limits]) -> None:
    items, limits = scenario
    reqs = plan(items, limits)
    by_id = {it.id: it for it in items}

    # every item is served by exactly one request, which contains it entirely
    served = [i for r in reqs for i in r.items]
    assert sorted(served) == sorted(by_id)
    for r in reqs:
        assert 1 <= r.count <= limits.size(r.kind)
        assert r.address >= 0
        assert r.end <= 65536
        covered = []
        for i in r.items:
            it = by_id[i]
            assert (it.unit, it.kind) == (r.unit, r.kind)
            assert r.address <= it.address
            assert it.end <= r.end
            covered.append((it.address, it.end))
        # the request starts and ends on configured registers and no hole exceeds the maximum gap
        covered.sort()
        assert covered[0][0] == r.address
        assert max(e for _, e in covered) == r.end
        reach = covered[0][1]
        for start, end in covered[1:]:
            assert start - reach <= limits.gap(r.kind)
            reach = max(reach, end)

    # no two neighbouring requests of one (unit, kind) could have been one request
    for a, b in itertools.pairwise(reqs):
        if (a.unit, a.kind) == (b.unit, b.kind):
            assert b.address >= a.address
            merged = max(a.end, b.end) - a.address
            assert b.address - a.end > limits.gap(a.kind) or merged > limits.size(a.kind)
