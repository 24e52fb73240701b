"""browse(): walk a real server, print TOML that parses and validates through the real config loader;
plus the pure formatter."""

from __future__ import annotations

import datetime as dt
import tomllib
import uuid
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua
from opcua_testserver import URI, PlcServer, ServerPki

from adapters.opcua.browse import BrowsedVariable, browse, format_tags, tag_name
from adapters.opcua.config import OpcUaSourceConfig, SecurityConfig
from adapters.opcua.nodeid import NodeId
from ingestd.config.load import parse_config
from ingestd.ports import AdapterRegistry, AdapterSpec

ROOT = Path(__file__).resolve().parents[3]
REGISTRY = AdapterRegistry([AdapterSpec("opcua", "adapters.opcua.config:OpcUaSourceConfig",
                                        "adapters.opcua.source:OpcUaSource")])


def load_with_source(endpoint: str, tags_toml: str) -> OpcUaSourceConfig:
    """Paste the browse output under a source in a complete config and load it like the daemon does."""
    text = f'''
[[tenants]]
slug = "acme"
dsn = "env:ACME_DSN"

[[sources]]
name = "plc1"
protocol = "opcua"
endpoint = "{endpoint}"

{tags_toml}'''
    cfg = parse_config(tomllib.loads(text), REGISTRY)
    source = cfg.sources[0]
    assert isinstance(source, OpcUaSourceConfig)
    return source


async def _add_extras(server: PlcServer) -> None:
    plant = server.server.get_node(f"ns={server.ns};s=Plant")
    await plant.add_variable(f"ns={server.ns};s=Mode", "Mode", ua.Variant(0, ua.VariantType.Int32),
                             datatype=ua.NodeId(ua.ObjectIds.ServerState))  # an enumeration
    await plant.add_variable(f"ns={server.ns};i=7001", "Running", True)
    await plant.add_variable(f"ns={server.ns};s=Counts", "Counts", ua.Variant([1, 2], ua.VariantType.Int32))
    await plant.add_variable(f"ns={server.ns};s=Uptime", "Up time", ua.Variant(2.0, ua.VariantType.Double),
                             datatype=ua.NodeId(ua.ObjectIds.Duration))  # Double subtype


async def test_browse_prints_a_loadable_tag_config(plc: Any) -> None:
    server: PlcServer = await plc(n_tags=5, string_tags=1)
    await _add_extras(server)
    text = await browse(server.endpoint, depth=5)
    source = load_with_source(server.endpoint, text)
    tags = {t.name: t for t in source.tags}
    assert set(tags) == {"Plant/Well0/Tag00", "Plant/Well1/Tag01", "Plant/Well2/Tag02", "Plant/Well0/Tag03",
                         "Plant/Well1/Tag04", "Plant/Mode", "Plant/Running", "Plant/Up_time"}
    t0 = tags["Plant/Well0/Tag00"]
    assert (t0.node_id, t0.data_type, t0.unit, t0.description) == (f"nsu={URI};s=Tag00", "float", "psi",
                                                                   "Test tag 0")
    assert tags["Plant/Mode"].data_type == "enum"
    assert (tags["Plant/Running"].data_type, tags["Plant/Running"].node_id) == ("bool", f"nsu={URI};i=7001")
    assert tags["Plant/Up_time"].data_type == "float"
    assert f"Plant/Text0 (nsu={URI};s=Text0): String values cannot be stored" in text
    assert f"Plant/Counts (nsu={URI};s=Counts): arrays are not supported" in text
    assert "Server" not in tags  # namespace 0 is not walked


async def test_browse_depth_and_filter(plc: Any) -> None:
    server: PlcServer = await plc(n_tags=6)
    text = await browse(server.endpoint, depth=5, pattern="Plant/Well1/*")
    names = [t["name"] for t in tomllib.loads(text)["sources"]["tags"]]
    assert names == ["Plant/Well1/Tag01", "Plant/Well1/Tag04"]
    shallow = tomllib.loads(await browse(server.endpoint, depth=2))
    assert "sources" not in shallow  # Objects/Plant/WellN: variables are 3 levels down


async def test_browse_with_security(plc: Any, tmp_path: Path) -> None:
    pki = ServerPki.create(tmp_path / "server")
    server: PlcServer = await plc(n_tags=2, pki=pki)
    text = await browse(server.endpoint, depth=4, state_dir=tmp_path / "client",
                        security=SecurityConfig(policy="Basic256Sha256", server_cert=str(pki.cert)))
    assert len(tomllib.loads(text)["sources"]["tags"]) == 2
    with pytest.raises(ValueError, match="state_dir"):
        await browse(server.endpoint, security=SecurityConfig(policy="Basic256Sha256"))


def test_tag_name_is_always_valid() -> None:
    assert tag_name(("Plant", "Well 1", "Pressure (psi)")) == "Plant/Well_1/Pressure__psi_"
    assert tag_name(("_hidden", "x")) == "t_hidden/x"
    assert len(tag_name(("a" * 300,))) == 200


def test_format_tags_escapes_dedupes_and_is_deterministic() -> None:
    ns = ["http://opcfoundation.org/UA/", "urn:x"]
    variables = [
        BrowsedVariable(("A", "B"), NodeId(1, "s", 'q"uote\\d'), "float", "Double", unit="°C",
                        description='say "hi"\nbye'),
        BrowsedVariable(("A", "B "), NodeId(1, "i", 5), "int", "Int32"),
        BrowsedVariable(("A", "T"), NodeId(1, "b", b"\x01\x02"), None, "String"),
        BrowsedVariable(("A", "V"), NodeId(1, "g", uuid.UUID(int=1)), "int", "Int32", array=True),
    ]
    when = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    text = format_tags(variables, ns, endpoint="opc.tcp://h:4840", generated=when)
    assert text == format_tags(list(reversed(variables)), ns, endpoint="opc.tcp://h:4840", generated=when)
    data = tomllib.loads(text)["sources"]["tags"]
    assert data[0] == {"name": "A/B", "node_id": 'nsu=urn:x;s=q"uote\\d', "data_type": "float", "unit": "°C",
                       "description": 'say "hi"\nbye'}
    assert [d["name"] for d in data] == ["A/B", "A/B_2"]  # "B " sanitizes to "B": deduplicated
    assert "#   A/T (nsu=urn:x;b=AQI=): String values cannot be stored" in text
    assert "2024-01-02T03:04:05Z" in text


async def test_ingestd_browse_command(plc: Any) -> None:
    """`ingestd browse opc.tcp://HOST:PORT --depth N --filter GLOB` prints a ready-to-paste tag config."""
    import asyncio
    import os
    import sys

    server: PlcServer = await plc(n_tags=5)
    root = ROOT
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ingestd", "browse", server.endpoint, "--depth", "5", "--filter", "*",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)})
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    source = load_with_source(server.endpoint, out.decode())
    assert len(source.tags) >= 5
    bad = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ingestd", "browse", "http://not-opc", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    _, err = await asyncio.wait_for(bad.communicate(), 60)
    assert bad.returncode == 1
    assert b"browse failed" in err
