"""Config validation through the real loader (errors with key paths) and the documented sample."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from adapters.registry import REGISTRY
from adapters.sparkplug.config import SparkplugSourceConfig
from ingestd.config.load import parse_config
from ingestd.errors import ConfigError

SAMPLE = Path(__file__).resolve().parents[3] / "adapters" / "sparkplug" / "sample.toml"
TENANTS = [{"slug": "t1", "dsn": "env:INGESTD_TEST_DSN"}]


def load(**source: Any) -> SparkplugSourceConfig:
    source = {"name": "spb", "protocol": "sparkplug", **source}
    cfg = parse_config({"tenants": TENANTS, "sources": [source]}, REGISTRY)
    src = cfg.sources[0]
    assert isinstance(src, SparkplugSourceConfig)
    return src


def problems(**source: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(**source)
    return [str(p) for p in info.value.problems]


def test_defaults() -> None:
    cfg = load()
    assert cfg.host == "ingestd-spb"
    assert (cfg.groups, cfg.reorder_timeout, cfg.rebirth_interval) == ([], 2.0, 5.0)
    assert (cfg.tag, cfg.node_tag, cfg.tenant_template) == ("{node}.{device}.{metric}", "{node}.{metric}", None)
    assert cfg.auto_register is True and cfg.historical == "store"
    assert cfg.exclude_metrics == ["bdSeq", "Node Control/*", "Device Control/*"]
    assert cfg.connection.version == "5"


def test_host_session_settings_cannot_be_changed() -> None:
    out = problems(connection={"session_expiry": "1h", "ack": "after_commit"})
    assert len(out) == 1 and out[0].startswith("sources[0].connection: ack, session_expiry cannot be set")


@pytest.mark.parametrize(("source", "expected"), [
    ({"tag": "{node}.{device}"}, "sources[0].tag: template '{node}.{device}' must use ['{metric}']"),
    ({"node_tag": "{node}.{device}.{metric}"}, "sources[0].node_tag: template '{node}.{device}.{metric}' uses"),
    ({"tenant_template": "{metric}"}, "sources[0].tenant_template: template '{metric}' uses"),
    ({"host_id": "a/b"}, "sources[0].host_id:"),
    ({"groups": ["G1", "G+"]}, "sources[0].groups[1]:"),
    ({"reorder_timeout": "soon"}, "sources[0].reorder_timeout: 'soon' is not a duration"),
    ({"rebirth_interval": 0}, "sources[0].rebirth_interval:"),
    ({"historical": "keep"}, "sources[0].historical: must be one of"),
    ({"tags": [{"name": "x", "metric": "Speed"}]}, "sources[0].tags[0]: `node` is required with `metric`"),
    ({"tags": [{"name": "x", "node": "E1"}]}, "sources[0].tags[0]: group/node/device only apply together"),
    ({"tags": [{"name": "bad name"}]}, "sources[0].tags[0].name:"),
    ({"shared_group": "g"}, "sources[0].shared_group: unknown key"),
])
def test_invalid_config_is_reported_with_its_key_path(source: dict[str, Any], expected: str) -> None:
    out = problems(**source)
    assert any(p.startswith(expected) for p in out), out


def test_explicit_tags() -> None:
    cfg = load(tags=[{"name": "well7.speed", "metric": "Pump/Speed", "node": "E1", "device": "D1", "unit": "rpm",
                      "deadband": 0.5},
                     {"name": "E1.D1.Flow", "unit": "bbl/d"}])
    assert cfg.tags[0].metric == "Pump/Speed" and cfg.tags[0].deadband == 0.5
    assert cfg.tags[1].metric is None


def test_sample_toml_documents_every_key_with_its_default() -> None:
    text = SAMPLE.read_text()
    data = {"tenants": [{"slug": "acme", "dsn": "env:X"}], **tomllib.loads(text)}
    (src,) = parse_config(data, REGISTRY).sources
    assert isinstance(src, SparkplugSourceConfig)
    documented = {line.lstrip("# ").split(" =")[0] for line in text.splitlines() if " = " in line}
    models: list[type[BaseModel]] = [SparkplugSourceConfig, type(src.connection), type(src.tags[0])]
    expected = set().union(*(m.model_fields for m in models)) - {"session_expiry", "ack", "tls", "tags",
                                                                 "connection"}
    assert expected <= documented, expected - documented
    defaults = SparkplugSourceConfig(name="x", protocol="sparkplug")
    sample = data["sources"][0]
    for key in set(SparkplugSourceConfig.model_fields) - {"name", "tenant", "host_id", "tags", "protocol"}:
        if key in sample:
            assert getattr(src, key) == getattr(defaults, key), key
    for key in sample["connection"]:
        assert getattr(src.connection, key) == getattr(defaults.connection, key), key
