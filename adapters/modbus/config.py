"""Config model of the Modbus TCP source (no I/O, no protocol library imports).

One source is one TCP connection (a PLC, an RTU or a Modbus TCP gateway with several unit ids behind it).
Every problem is reported with its key path, e.g. ``sources[0].tags[3].bit: only valid for type "bit"``.
The README next to this file documents every key; ``sample.toml`` shows every default.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from ingestd.config.base import Frozen, SourceConfig, TagConfig
from ingestd.config.types import Duration, Port, between

__all__ = [
    "BIT_KINDS",
    "REGISTER_KINDS",
    "TYPE_REGISTERS",
    "Addressing",
    "ByteOrder",
    "ModbusSourceConfig",
    "ModbusTagConfig",
    "ModbusType",
    "RegisterKind",
    "ResolvedTag",
    "UnitConfig",
    "register_count",
    "resolve_address",
]

RegisterKind = Literal["coil", "discrete", "holding", "input"]
ModbusType = Literal[
    "bool", "bit", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string",
]
ByteOrder = Literal["ABCD", "CDAB", "BADC", "DCBA"]
Addressing = Literal["zero_based", "one_based", "modicon"]

BIT_KINDS: Final[frozenset[str]] = frozenset({"coil", "discrete"})
REGISTER_KINDS: Final[frozenset[str]] = frozenset({"holding", "input"})

TYPE_REGISTERS: Final[dict[str, int]] = {
    "bool": 1, "bit": 1, "int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "int64": 4, "uint64": 4,
    "float32": 2, "float64": 4,
}
"""Registers (or bits, for ``bool``) per value; ``string`` uses ``length``."""

_CORE_DATA_TYPE: Final[dict[str, str]] = {
    "bool": "bool", "bit": "bool", "int16": "int", "uint16": "int", "int32": "int", "uint32": "int",
    "int64": "int", "uint64": "int", "float32": "float", "float64": "float", "string": "string",
}

# Modicon notation: (first, last, kind, wire offset). 5-digit ranges first, then 6-digit.
_MODICON: Final = (
    (1, 9999, "coil", 1),
    (10001, 19999, "discrete", 10001),
    (30001, 39999, "input", 30001),
    (40001, 49999, "holding", 40001),
    (100001, 165536, "discrete", 100001),
    (300001, 365536, "input", 300001),
    (400001, 465536, "holding", 400001),
)


def _at_least(lo: float) -> AfterValidator:
    def check(v: float) -> float:
        if v < lo:
            raise ValueError(f"{v:g}s is shorter than the minimum {lo:g}s")
        return v

    return AfterValidator(check)


def _positive(v: float) -> float:
    if v <= 0:
        raise ValueError("must be longer than 0s")
    return v


Positive = Annotated[Duration, AfterValidator(_positive)]


class UnitConfig(Frozen):
    """One unit id (slave id) behind the connection, with optional per-unit settings."""

    id: Annotated[int, between(0, 255)]
    timeout: Positive | None = None
    """Per-request timeout for this unit (default: the source's ``timeout``), e.g. a slow radio RTU."""


class ModbusTagConfig(TagConfig):
    """One value read from a device. ``scale``/``offset``/``deadband`` are applied by the core."""

    unit_id: Annotated[int, between(0, 255)] | None = None
    """Unit id (slave id) holding this value; default: the source's ``unit_id``."""
    register_type: RegisterKind | None = Field(default=None, alias="register")
    """Config key ``register``: ``coil``, ``discrete``, ``holding`` or ``input``. Default ``holding``
    (with ``addressing = "modicon"`` the address prefix decides)."""
    address: int
    """First register/bit, in the source's ``addressing`` convention."""
    type: ModbusType = "uint16"
    """How the register(s) are decoded."""
    byte_order: ByteOrder = "ABCD"
    """Order of the value's bytes on the wire: ``A`` is the most significant byte."""
    bit: Annotated[int, between(0, 15)] | None = None
    """``type = "bit"``: bit of the 16-bit register, 0 = least significant."""
    length: Annotated[int, between(1, 125)] | None = None
    """``type = "string"``: number of registers (two characters each)."""

    @model_validator(mode="before")
    @classmethod
    def _derive_data_type(cls, data: Any) -> Any:
        # The core's ``data_type`` (float/int/bool/string) follows the wire type unless set explicitly.
        if isinstance(data, dict) and "data_type" not in data:
            wire = data.get("type", "uint16")
            if isinstance(wire, str) and wire in _CORE_DATA_TYPE:
                derived = _CORE_DATA_TYPE[wire]
                if derived == "int" and (data.get("scale", 1) != 1 or data.get("offset", 0) != 0):
                    derived = "float"  # a scaled integer is a measurement, not a count
                return {**data, "data_type": derived}
        return data

    @model_validator(mode="after")
    def _check_shape(self) -> ModbusTagConfig:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        given = self.model_fields_set
        if self.bit is not None and self.type != "bit":
            problems.append((("bit",), 'only valid for type "bit"'))
        if self.type == "bit" and self.bit is None:
            problems.append((("bit",), 'required for type "bit" (0..15, 0 = least significant)'))
        if self.length is not None and self.type != "string":
            problems.append((("length",), 'only valid for type "string"'))
        if self.type == "string" and self.length is None:
            problems.append((("length",), 'required for type "string" (number of registers, 2 characters each)'))
        if "byte_order" in given and self.type in ("bool", "bit"):
            problems.append((("byte_order",), f'not used by type "{self.type}"'))
        if self.data_type == "string" and self.type != "string":
            problems.append((("data_type",), f'"string" needs type "string" (type is "{self.type}")'))
        if self.type == "string" and self.data_type not in ("string", "float", "int"):
            problems.append((("data_type",), 'type "string" can feed data_type "string", "float" or "int" only'))
        _raise(problems, "ModbusTagConfig")
        return self


@dataclass(frozen=True, slots=True)
class ResolvedTag:
    """A tag's wire-level location after applying the addressing convention and defaults."""

    unit: int
    kind: str
    address: int
    """Protocol (wire) address: 0 = the first register."""
    count: int
    """Registers (or bits) the value occupies."""


def register_count(tag: ModbusTagConfig) -> int:
    return (tag.length or 0) if tag.type == "string" else TYPE_REGISTERS[tag.type]


def resolve_address(address: int, register: str | None, addressing: str) -> tuple[str, int]:
    """``(kind, wire address)`` for a configured address, or ``ValueError`` saying what is wrong."""
    if addressing == "modicon":
        for first, last, kind, base in _MODICON:
            if first <= address <= last:
                if register is not None and register != kind:
                    raise ValueError(
                        f'{address} is a {kind} address in Modicon notation, but register = "{register}"'
                    )
                return kind, address - base
        raise ValueError(
            f"{address} is not a Modicon address (0xxxx coils 1-9999, 1xxxx discrete, 3xxxx input, "
            "4xxxx holding; 6 digits such as 400001-465536 for the full range)"
        )
    kind = register or "holding"
    lo = 1 if addressing == "one_based" else 0
    if not lo <= address <= lo + 65535:
        raise ValueError(f"{address} is outside {lo}..{lo + 65535}")
    return kind, address - lo


class ModbusSourceConfig(SourceConfig):
    """One Modbus TCP connection: a PLC, an RTU, or a gateway with several unit ids behind it."""

    protocol: Literal["modbus"]
    host: Annotated[str, Field(min_length=1)]
    port: Port = 502
    unit_id: Annotated[int, between(0, 255)] = 1
    """Default unit id for tags without ``unit_id``."""
    units: list[UnitConfig] = Field(default_factory=list)
    """Optional per-unit settings. When given, every tag's unit id must be listed here."""
    poll_interval: Annotated[Duration, _at_least(0.01)] = 1.0
    timeout: Positive = 1.0
    """Per-request response timeout."""
    connect_timeout: Positive = 5.0
    retries: Annotated[int, between(0, 10)] = 1
    """Re-sends of a request that timed out or got exception 5/6 (acknowledge/busy), within one poll."""
    pause: Duration = 0.0
    """Wait between two requests on this connection (for devices that need breathing room)."""
    pause_after_connect: Duration = 0.0
    max_gap: Annotated[int, between(0, 124)] = 10
    """Unused registers read to merge two reads into one. 0 reads only configured registers."""
    max_gap_bits: Annotated[int, between(0, 1999)] = 64
    """Unused coils/discrete inputs read to merge two reads into one."""
    max_registers: Annotated[int, between(1, 125)] = 125
    """Registers per read request (protocol limit 125)."""
    max_bits: Annotated[int, between(1, 2000)] = 2000
    """Coils/discrete inputs per read request (protocol limit 2000)."""
    addressing: Addressing = "zero_based"
    """``zero_based``: address 0 is the first register (what goes on the wire). ``one_based``: address 1 is
    the first register (manuals listing "register 1..65536"). ``modicon``: 40001 is the first holding
    register, 30001 input, 10001 discrete, 00001 coil (6-digit forms 400001-465536 reach every address)."""
    tags: Annotated[list[ModbusTagConfig], Field(min_length=1)]  # type: ignore[assignment]

    @model_validator(mode="after")
    def _check_tags(self) -> ModbusSourceConfig:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        seen: dict[int, int] = {}
        for i, u in enumerate(self.units):
            if u.id in seen:
                problems.append((("units", i, "id"), f"duplicate unit id {u.id} (also units[{seen[u.id]}])"))
            else:
                seen[u.id] = i
        for j, tag in enumerate(self.tags):
            problems.extend((("tags", j, *loc), msg) for loc, msg in _tag_problems(self, tag))
        _raise(problems, "ModbusSourceConfig")
        return self

    def resolved(self) -> list[ResolvedTag]:
        """Every tag's unit, register kind, wire address and size (the config is already validated)."""
        out = []
        for tag in self.tags:
            kind, address = resolve_address(tag.address, tag.register_type, self.addressing)
            unit = self.unit_id if tag.unit_id is None else tag.unit_id
            out.append(ResolvedTag(unit, kind, address, register_count(tag)))
        return out

    def unit_timeout(self, unit: int) -> float:
        for u in self.units:
            if u.id == unit and u.timeout is not None:
                return u.timeout
        return self.timeout

    def security_warnings(self) -> list[tuple[str, str]]:
        return [("host", "Modbus TCP has no authentication or encryption; keep it on an isolated network")]


def _tag_problems(src: ModbusSourceConfig, tag: ModbusTagConfig) -> Iterable[tuple[tuple[str | int, ...], str]]:
    unit = src.unit_id if tag.unit_id is None else tag.unit_id
    if src.units and unit not in {u.id for u in src.units}:
        where = ("unit_id",) if tag.unit_id is not None else ()
        yield where, f"unit id {unit} is not listed in units (listed: {sorted({u.id for u in src.units})})"
    try:
        kind, address = resolve_address(tag.address, tag.register_type, src.addressing)
    except ValueError as exc:
        yield ("address",), str(exc)
        return
    if kind in BIT_KINDS and tag.type != "bool":
        yield ("type",), f'{kind} registers hold single bits: use type "bool" (not "{tag.type}")'
        return
    if kind in REGISTER_KINDS and tag.type == "bool":
        yield ("type",), (f'"bool" is for coils and discrete inputs; for a bit of a {kind} register use '
                          'type = "bit" with bit = 0..15')
        return
    count = register_count(tag)
    if address + count > 65536:
        yield ("address",), f"{tag.address} + {count} registers runs past the last address (65535)"
    if kind in REGISTER_KINDS and count > src.max_registers:
        yield ("length",), f"{count} registers do not fit in one request (max_registers = {src.max_registers})"


def _raise(problems: list[tuple[tuple[str | int, ...], str]], title: str) -> None:
    """Raise every problem at once, each at its own key path (nested under the model's location)."""
    if not problems:
        return
    errors = [
        InitErrorDetails(type=PydanticCustomError("value_error", "{error}", {"error": msg}), loc=loc, input=None)
        for loc, msg in problems
    ]
    raise ValidationError.from_exception_data(title, errors)
