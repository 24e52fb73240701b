"""Config validation through the real loader: every invalid combination is an error with its key path."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.modbus.config import ModbusSourceConfig, ResolvedTag
from ingestd.errors import ConfigError

from .support import load_source, load_sources


def _problems(*tags: dict[str, Any], **source: Any) -> list[str]:
    src = {"name": "plc", "protocol": "modbus", "host": "10.0.0.5", "tags": list(tags), **source}
    with pytest.raises(ConfigError) as info:
        load_sources(src)
    return [str(p) for p in info.value.problems]


def test_minimal_source_gets_documented_defaults() -> None:
    cfg = load_source(tags=[{"name": "pressure", "address": 0}])
    assert isinstance(cfg, ModbusSourceConfig)
    assert (cfg.port, cfg.unit_id, cfg.poll_interval, cfg.timeout, cfg.retries, cfg.pause) == (502, 1, 1.0, 1.0, 1, 0.0)
    assert (cfg.max_gap, cfg.max_registers, cfg.max_bits, cfg.addressing) == (10, 125, 2000, "zero_based")
    tag = cfg.tags[0]
    assert (tag.register_type, tag.type, tag.byte_order, tag.data_type) == (None, "uint16", "ABCD", "int")
    assert cfg.resolved() == [ResolvedTag(1, "holding", 0, 1)]


@pytest.mark.parametrize(("tag", "expected"), [
    ({"type": "float32"}, "float"),
    ({"type": "bit", "bit": 3}, "bool"),
    ({"type": "bool", "register": "coil"}, "bool"),
    ({"type": "int16", "scale": 0.1}, "float"),
    ({"type": "string", "length": 4}, "string"),
    ({"type": "uint16", "data_type": "enum"}, "enum"),
])
def test_core_data_type_follows_the_wire_type(tag: dict[str, Any], expected: str) -> None:
    cfg = load_source(tags=[{"name": "t", "address": 0, **tag}])
    assert cfg.tags[0].data_type == expected


BAD_TAGS = [
    ({"type": "float32", "bit": 3}, 'sources[0].tags[0].bit: only valid for type "bit"'),
    ({"type": "bit"}, 'sources[0].tags[0].bit: required for type "bit" (0..15, 0 = least significant)'),
    ({"type": "bit", "bit": 16}, "sources[0].tags[0].bit: 16 is outside 0..15"),
    ({"type": "string"}, 'sources[0].tags[0].length: required for type "string" (number of registers, '
                         '2 characters each)'),
    ({"type": "int32", "length": 2}, 'sources[0].tags[0].length: only valid for type "string"'),
    ({"type": "string", "length": 126}, "sources[0].tags[0].length: 126 is outside 1..125"),
    ({"type": "bool", "register": "coil", "byte_order": "CDAB"}, 'sources[0].tags[0].byte_order: not used by type '
                                                                 '"bool"'),
    ({"type": "float32", "data_type": "string"}, 'sources[0].tags[0].data_type: "string" needs type "string" '
                                                 '(type is "float32")'),
    ({"type": "float128"}, "sources[0].tags[0].type: must be one of 'bool', 'bit', 'int16', 'uint16', 'int32', "
                           "'uint32', 'int64', 'uint64', 'float32', 'float64' or 'string'"),
    ({"byte_order": "ABDC"}, "sources[0].tags[0].byte_order: must be one of 'ABCD', 'CDAB', 'BADC' or 'DCBA'"),
    ({"register": "holdings"}, "sources[0].tags[0].register: must be one of 'coil', 'discrete', 'holding' or "
                               "'input'"),
    ({"unit_id": 256}, "sources[0].tags[0].unit_id: 256 is outside 0..255"),
    ({"slave": 2}, "sources[0].tags[0].slave: unknown key (check the spelling; see config/*.toml for the "
                   "documented keys)"),
]


@pytest.mark.parametrize(("tag", "expected"), BAD_TAGS, ids=[e.split(": ")[0] + "-" + str(i)
                                                               for i, (_, e) in enumerate(BAD_TAGS)])
def test_tag_shape_errors(tag: dict[str, Any], expected: str) -> None:
    assert _problems({"name": "t", "address": 0, **tag}) == [expected]


BAD_LOCATIONS = [
    ({"address": 70000}, {}, "sources[0].tags[0].address: 70000 is outside 0..65535"),
    ({"address": -1}, {}, "sources[0].tags[0].address: -1 is outside 0..65535"),
    ({"address": 0}, {"addressing": "one_based"}, "sources[0].tags[0].address: 0 is outside 1..65536"),
    ({"address": 3, "type": "bool"}, {},
     'sources[0].tags[0].type: "bool" is for coils and discrete inputs; for a bit of a holding register use '
     'type = "bit" with bit = 0..15'),
    ({"address": 3, "type": "bool", "register": "input"}, {},
     'sources[0].tags[0].type: "bool" is for coils and discrete inputs; for a bit of a input register use '
     'type = "bit" with bit = 0..15'),
    ({"address": 3, "type": "float32", "register": "coil"}, {},
     'sources[0].tags[0].type: coil registers hold single bits: use type "bool" (not "float32")'),
    ({"address": 65535, "type": "int32"}, {},
     "sources[0].tags[0].address: 65535 + 2 registers runs past the last address (65535)"),
    ({"address": 65536, "type": "float64"}, {"addressing": "one_based"},
     "sources[0].tags[0].address: 65536 + 4 registers runs past the last address (65535)"),
    ({"address": 0, "type": "string", "length": 100}, {"max_registers": 64},
     "sources[0].tags[0].length: 100 registers do not fit in one request (max_registers = 64)"),
    ({"address": 20001}, {"addressing": "modicon"},
     "sources[0].tags[0].address: 20001 is not a Modicon address (0xxxx coils 1-9999, 1xxxx discrete, 3xxxx "
     "input, 4xxxx holding; 6 digits such as 400001-465536 for the full range)"),
    ({"address": 40001, "register": "input"}, {"addressing": "modicon"},
     'sources[0].tags[0].address: 40001 is a holding address in Modicon notation, but register = "input"'),
    ({"address": 0, "unit_id": 7}, {"units": [{"id": 1}, {"id": 2}]},
     "sources[0].tags[0].unit_id: unit id 7 is not listed in units (listed: [1, 2])"),
    ({"address": 0}, {"unit_id": 9, "units": [{"id": 1}]},
     "sources[0].tags[0]: unit id 9 is not listed in units (listed: [1])"),
]


@pytest.mark.parametrize(("tag", "source", "expected"), BAD_LOCATIONS,
                         ids=[f"{i}" for i in range(len(BAD_LOCATIONS))])
def test_location_errors(tag: dict[str, Any], source: dict[str, Any], expected: str) -> None:
    assert _problems({"name": "t", **tag}, **source) == [expected]


@pytest.mark.parametrize(("source", "expected"), [
    ({"units": [{"id": 1}, {"id": 2}, {"id": 1}]}, "sources[0].units[2].id: duplicate unit id 1 (also units[0])"),
    ({"max_registers": 126}, "sources[0].max_registers: 126 is outside 1..125"),
    ({"max_bits": 2001}, "sources[0].max_bits: 2001 is outside 1..2000"),
    ({"max_gap": 125}, "sources[0].max_gap: 125 is outside 0..124"),
    ({"poll_interval": "5ms"}, "sources[0].poll_interval: 0.005s is shorter than the minimum 0.01s"),
    ({"timeout": 0}, "sources[0].timeout: must be longer than 0s"),
    ({"retries": 11}, "sources[0].retries: 11 is outside 0..10"),
    ({"port": 70000}, "sources[0].port: 70000 is outside 0..65535"),
    ({"addressing": "1-based"}, "sources[0].addressing: must be one of 'zero_based', 'one_based' or 'modicon'"),
    ({"units": [{"id": 300}]}, "sources[0].units[0].id: 300 is outside 0..255"),
])
def test_source_errors(source: dict[str, Any], expected: str) -> None:
    assert _problems({"name": "t", "address": 0}, **source) == [expected]


def test_missing_host_and_tags() -> None:
    with pytest.raises(ConfigError) as info:
        load_sources({"name": "plc", "protocol": "modbus"})
    assert sorted(str(p) for p in info.value.problems) == [
        "sources[0].host: required key is missing", "sources[0].tags: required key is missing",
    ]
    assert _problems() == ["sources[0].tags: List should have at least 1 item after validation, not 0"]


def test_every_problem_of_every_tag_is_reported_at_once() -> None:
    problems = _problems(
        {"name": "a", "address": 0},
        {"name": "b", "address": 70000},
        {"name": "c", "address": 4, "type": "bool"},
        {"name": "d", "address": 5, "unit_id": 3},
        units=[{"id": 1}, {"id": 1}],
    )
    assert problems == [
        "sources[0].units[1].id: duplicate unit id 1 (also units[0])",
        "sources[0].tags[1].address: 70000 is outside 0..65535",
        'sources[0].tags[2].type: "bool" is for coils and discrete inputs; for a bit of a holding register use '
        'type = "bit" with bit = 0..15',
        "sources[0].tags[3].unit_id: unit id 3 is not listed in units (listed: [1])",
    ]


@pytest.mark.parametrize(("address", "register", "expected"), [
    (1, None, ("coil", 0)),
    (9999, None, ("coil", 9998)),
    (10001, None, ("discrete", 0)),
    (30001, None, ("input", 0)),
    (40001, None, ("holding", 0)),
    (49999, "holding", ("holding", 9998)),
    (465536, None, ("holding", 65535)),
    (300101, None, ("input", 100)),
    (165536, None, ("discrete", 65535)),
])
def test_modicon_addresses(address: int, register: str | None, expected: tuple[str, int]) -> None:
    tag: dict[str, Any] = {"name": "t", "address": address}
    if register:
        tag["register"] = register
    if expected[0] in ("coil", "discrete"):
        tag["type"] = "bool"
    cfg = load_source(addressing="modicon", tags=[tag])
    r = cfg.resolved()[0]
    assert (r.kind, r.address) == expected


def test_one_based_and_per_tag_units() -> None:
    cfg = load_source(addressing="one_based", unit_id=3, units=[{"id": 3}, {"id": 4, "timeout": "2.5s"}], tags=[
        {"name": "a", "address": 1, "type": "float32"},
        {"name": "b", "address": 65536, "unit_id": 4},
        {"name": "c", "address": 1, "register": "discrete", "type": "bool"},
    ])
    assert cfg.resolved() == [
        ResolvedTag(3, "holding", 0, 2), ResolvedTag(4, "holding", 65535, 1), ResolvedTag(3, "discrete", 0, 1),
    ]
    assert (cfg.unit_timeout(3), cfg.unit_timeout(4)) == (1.0, 2.5)


def test_plain_modbus_is_flagged_by_check_config() -> None:
    cfg = load_source(tags=[{"name": "a", "address": 0}])
    assert cfg.security_warnings() == [
        ("host", "Modbus TCP has no authentication or encryption; keep it on an isolated network"),
    ]
