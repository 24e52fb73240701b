"""sample.toml loads through the real loader and documents every key with its default."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from adapters.modbus.config import ModbusSourceConfig, ModbusTagConfig, UnitConfig
from ingestd.config.load import parse_config

from .support import REGISTRY

SAMPLE = Path(__file__).parents[3] / "adapters" / "modbus" / "sample.toml"


def _load() -> tuple[str, dict[str, Any]]:
    text = SAMPLE.read_text(encoding="utf-8")
    return text, tomllib.loads(text)


def test_sample_loads_through_the_real_loader() -> None:
    _, data = _load()
    cfg = parse_config({"tenants": [{"slug": "acme", "dsn": "env:ACME_DSN"}], **data}, REGISTRY)
    assert [s.name for s in cfg.sources] == ["pad12-plc", "pad7-gateway"]
    assert all(isinstance(s, ModbusSourceConfig) for s in cfg.sources)


def _keys(model: type[BaseModel]) -> set[str]:
    return {f.alias or name for name, f in model.model_fields.items()}


def test_every_key_is_documented() -> None:
    text, _ = _load()
    documented = set(re.findall(r"^#?\s*([a-z_]+) = ", text, flags=re.MULTILINE))
    documented |= set(re.findall(r"^\[\[sources\.([a-z_]+)\]\]", text, flags=re.MULTILINE))
    for model in (ModbusSourceConfig, ModbusTagConfig, UnitConfig):
        assert _keys(model) <= documented, (model.__name__, _keys(model) - documented)


EXAMPLES = {"tenant"}  # keys the sample sets to an example value on purpose (the brief's "with a tenant")


def test_first_source_and_tag_show_the_defaults() -> None:
    _, data = _load()
    source, tag = data["sources"][0], data["sources"][0]["tags"][0]
    for model, table in ((ModbusSourceConfig, source), (ModbusTagConfig, tag)):
        for name, f in model.model_fields.items():
            key = f.alias or name
            if key not in table or f.is_required() or key in EXAMPLES | {"tags"}:
                continue
            if name == "register_type":
                assert table[key] == "holding"  # what an unset register means
                continue
            value = getattr(model.model_validate(_minimal(model, {key: table[key]})), name)
            default = f.get_default(call_default_factory=True)
            if name == "data_type":
                default = "int"  # derived from the default type uint16
            assert value == default, (model.__name__, key, table[key])


def _minimal(model: type[BaseModel], extra: dict[str, Any]) -> dict[str, Any]:
    if model is ModbusTagConfig:
        return {"name": "t", "address": 0, **extra}
    return {"name": "s", "protocol": "modbus", "host": "h", "tags": [{"name": "t", "address": 0}], **extra}
