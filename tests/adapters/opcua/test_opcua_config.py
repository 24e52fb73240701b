"""Config validation through the real loader (key paths), defaults, warnings, and sample.toml."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from adapters.opcua.config import (
    AuthConfig,
    LimitsConfig,
    MonitoringOverride,
    OpcUaSourceConfig,
    OpcUaTagConfig,
    PollingConfig,
    SecurityConfig,
    SubscriptionConfig,
)
from ingestd.config.load import parse_config
from ingestd.errors import ConfigError
from ingestd.ports import AdapterRegistry, AdapterSpec

REGISTRY = AdapterRegistry([AdapterSpec("opcua", "adapters.opcua.config:OpcUaSourceConfig",
                                        "adapters.opcua.source:OpcUaSource")])
SAMPLE = Path(__file__).parents[3] / "adapters" / "opcua" / "sample.toml"
TENANT = {"slug": "acme", "dsn": "env:ACME_DSN"}


def load(source: dict[str, Any]) -> OpcUaSourceConfig:
    base = {"name": "plc1", "protocol": "opcua", "endpoint": "opc.tcp://10.0.0.5:4840",
            "tags": [{"name": "t1", "node_id": "ns=2;s=T1"}]}
    cfg = parse_config({"tenants": [TENANT], "sources": [base | source]}, REGISTRY)
    src = cfg.sources[0]
    assert isinstance(src, OpcUaSourceConfig)
    return src


def problems(source: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        load(source)
    return {p.path: p.message for p in info.value.problems}


def test_defaults() -> None:
    cfg = load({})
    assert cfg.mode == "subscription"
    assert cfg.timestamp == "source"
    assert cfg.security.policy == "None"
    assert cfg.security.effective_mode == "None"
    assert cfg.auth.method == "anonymous"
    assert cfg.limits.fallback == 1000
    assert cfg.subscription.publishing_interval == 0.25
    assert cfg.polling.interval == 1.0


def test_malformed_node_id_is_rejected_with_its_key_path() -> None:
    found = problems({"tags": [{"name": "ok", "node_id": "ns=2;i=5"}, {"name": "bad", "node_id": "ns=2;i=x"},
                               {"name": "bad2", "node_id": "ns=2;g=nope"}]})
    assert "not a non-negative integer" in found["sources[0].tags[1].node_id"]
    assert "not a GUID" in found["sources[0].tags[2].node_id"]
    assert "sources[0].tags[0].node_id" not in found


@pytest.mark.parametrize(("source", "path", "message"), [
    ({"endpoint": "http://x:80"}, "sources[0].endpoint", "not an OPC UA endpoint"),
    ({"endpoint": "opc.tcp://user:pw@x:4840"}, "sources[0].endpoint", "credentials in the endpoint"),
    ({"endpoint": "opc.tcp://x:99999"}, "sources[0].endpoint", "not a number in 1..65535"),
    ({"security": {"mode": "Sign"}}, "sources[0].security", "needs a security policy"),
    ({"security": {"policy": "Basic256Sha256", "mode": "None"}}, "sources[0].security", "needs mode"),
    ({"security": {"policy": "Basic128Rsa15"}}, "sources[0].security.policy", "must be one of"),
    ({"security": {"policy": "Basic256Sha256", "client_cert": "/c.der"}}, "sources[0].security", "together"),
    ({"auth": {"method": "username", "username": "u"}}, "sources[0].auth", "needs username and password"),
    ({"auth": {"username": "u", "password": "p"}}, "sources[0].auth", "method is 'anonymous'"),
    ({"subscription": {"keepalive_count": 30, "lifetime_count": 60}}, "sources[0].subscription",
     "at least 3"),
    ({"subscription": {"deadband_type": "percent", "deadband_value": 150}}, "sources[0].subscription",
     "outside 0..100"),
    ({"subscription": {"publishing_interval": 0}}, "sources[0].subscription.publishing_interval",
     "greater than 0"),
    ({"tags": []}, "sources[0].tags", "at least 1"),
    ({"tags": [{"name": "t", "node_id": "i=1", "data_type": "string"}]}, "sources[0].tags[0].data_type",
     "string values cannot be stored"),
    ({"tags": [{"name": "t", "node_id": "i=1", "monitoring": {"deadband_value": 120}}],
      "subscription": {"deadband_type": "percent"}}, "sources[0]", "tag 't': percent deadband"),
    ({"mode": "poll"}, "sources[0].mode", "must be one of"),
    ({"limits": {"fallback": 0}}, "sources[0].limits.fallback", "greater than or equal to 1"),
    ({"unknown_key": 1}, "sources[0].unknown_key", "unknown key"),
])
def test_invalid_config(source: dict[str, Any], path: str, message: str) -> None:
    found = problems(source)
    assert path in found, found
    assert message in found[path]


def test_endpoint_gets_the_default_port() -> None:
    assert load({"endpoint": "opc.tcp://plc.local/UA/Server"}).endpoint == "opc.tcp://plc.local:4840/UA/Server"


def test_secrets_never_appear_in_errors_or_reprs() -> None:
    found = problems({"auth": {"method": "username", "password": "hunter2-secret"}})
    assert all("hunter2" not in m for m in found.values())
    cfg = load({"auth": {"method": "username", "username": "u", "password": "hunter2-secret"}})
    assert "hunter2" not in repr(cfg)


def test_security_warnings() -> None:
    plain = dict(load({"auth": {"method": "username", "username": "u", "password": "inline"}}).security_warnings())
    assert "unsecured" in plain["security.policy"]
    assert "auth.password" in plain
    secure = load({"security": {"policy": "Basic256Sha256", "server_cert": "/etc/plc.der"},
                   "auth": {"method": "username", "username": "u", "password": "env:PW"}})
    assert secure.security_warnings() == []
    signed = dict(load({"security": {"policy": "Aes256_Sha256_RsaPss", "mode": "Sign"}}).security_warnings())
    assert set(signed) == {"security.mode", "security.server_cert"}


def test_sample_toml_loads_and_shows_every_key_with_its_default() -> None:
    text = SAMPLE.read_text()
    data = tomllib.loads(text)
    cfg = parse_config({"tenants": [TENANT], **data}, REGISTRY)
    sample = cfg.sources[0]
    assert isinstance(sample, OpcUaSourceConfig)
    # explicit values equal the defaults
    minimal = OpcUaSourceConfig.model_validate({
        "name": "plc1", "protocol": "opcua", "endpoint": sample.endpoint,
        "tags": [{"name": sample.tags[0].name, "node_id": sample.tags[0].node_id}],
    })
    assert sample == minimal
    # every documented key is in the sample (set or commented out)
    for model in (OpcUaSourceConfig, OpcUaTagConfig, SecurityConfig, AuthConfig, SubscriptionConfig,
                  PollingConfig, LimitsConfig, MonitoringOverride):
        for key in _fields(model):
            as_key = re.search(rf"(^|[\s{{,])#?\s*{key}\s*=", text, re.MULTILINE)
            as_table = re.search(rf"^\[\[?sources\.{key}\]\]?$", text, re.MULTILINE)
            assert as_key or as_table, f"{model.__name__}.{key} is missing from sample.toml"


def _fields(model: type[BaseModel]) -> list[str]:
    return list(model.model_fields)
