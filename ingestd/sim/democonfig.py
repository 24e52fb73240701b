"""The ingestd configuration of the demo, written as a commented TOML file a newcomer can read.

It uses every adapter registered when the demo runs (OPC UA, Modbus and Sparkplug sources appear
as their adapters land in ``adapters/registry.py``; MQTT JSON is always there) and an ``[alarms]``
section when the alarm configuration supports rules.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from ..auth import hash_token
from .layout import (
    MODBUS_REGISTERS,
    MQTT_TOPIC,
    OPCUA_NAMESPACE,
    SPARKPLUG_GROUP,
    TAGS,
    UNITS,
    Layout,
    alarm_well,
    well_name,
)

__all__ = ["DemoPorts", "demo_config", "toml_value"]

TENANT = "demo"


@dataclass(frozen=True)
class DemoPorts:
    postgres: int
    mqtt: int
    modbus: int
    opcua: int
    api: int
    metrics: int


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"no TOML form for {type(v).__name__}")


def _table(header: str, items: Mapping[str, Any], comment: str = "") -> str:
    lines = [f"# {comment}"] if comment else []
    lines.append(header)
    lines += [f"{k} = {toml_value(v)}" for k, v in items.items()]
    return "\n".join(lines) + "\n"


def _tags(wells: list[int], extra: Any = None) -> str:
    """One tag per line (readable), with units; ``extra(well, tag)`` adds the addressing keys."""
    rows = []
    for w in wells:
        for tag in TAGS:
            entry: dict[str, Any] = {"name": f"{well_name(w)}.{tag}"}
            if UNITS[tag]:
                entry["unit"] = UNITS[tag]
            if tag == "pump_running":
                entry["data_type"] = "bool"
            if extra is not None:
                entry.update(extra(w, tag))
            rows.append("  " + toml_value(entry) + ",")
    return "tags = [\n" + "\n".join(rows) + "\n]\n"


def _modbus_tag(w: int, tag: str) -> dict[str, Any]:
    wire = {"type": "uint16"} if tag == "pump_running" else {"type": "float32"}
    return {"unit_id": w, "address": MODBUS_REGISTERS[tag], **wire}


def _opcua_tag(w: int, tag: str) -> dict[str, Any]:
    return {"node_id": f"nsu={OPCUA_NAMESPACE};s={well_name(w)}.{tag}"}


def _sources(layout: Layout, ports: DemoPorts) -> list[str]:
    out = []
    mqtt_conn: dict[str, Any] = {"host": "127.0.0.1", "port": ports.mqtt}
    for proto in layout.protocols:
        wells = layout.wells_of(proto)
        if not wells:
            continue
        span = f"wells {wells[0]}-{wells[-1]}" if len(wells) > 1 else f"well {wells[0]}"
        head: dict[str, Any] = {"name": f"field-{proto}", "protocol": proto, "tenant": TENANT}
        body: dict[str, Any]
        if proto == "mqtt":
            body = {**head, "connection": {**mqtt_conn, "client_id": "ingestd-demo-json"},
                    "subscriptions": [{"topic": MQTT_TOPIC, "values_path": "values",
                                       "tag": "{well}.{key}", "timestamp_path": "ts", "timestamp_unit": "ms"}]}
            note = f"MQTT JSON: {span}, one message per well and second on demo/wells/<well>"
            out.append(_table("[[sources]]", body, note) + _tags(wells))
        elif proto == "sparkplug":
            body = {**head, "connection": {**mqtt_conn, "client_id": "ingestd-demo-sparkplug"},
                    "groups": [SPARKPLUG_GROUP], "tag": "{device}.{metric}"}
            out.append(_table("[[sources]]", body, f"Sparkplug B: {span}, a device per well") + _tags(wells))
        elif proto == "modbus":
            body = {**head, "host": "127.0.0.1", "port": ports.modbus, "poll_interval": "1s", "timeout": "500ms"}
            note = f"Modbus TCP gateway: {span}, each well a unit id, float32 holding registers"
            out.append(_table("[[sources]]", body, note) + _tags(wells, _modbus_tag))
        elif proto == "opcua":
            body = {**head, "endpoint": f"opc.tcp://127.0.0.1:{ports.opcua}", "mode": "subscription"}
            out.append(_table("[[sources]]", body, f"OPC UA server: {span}, a folder per well")
                       + _tags(wells, _opcua_tag))
    return out


def _alarms(layout: Layout) -> str:
    tripping = well_name(alarm_well(layout.wells))
    rules: list[tuple[dict[str, Any], str]] = [
        ({"name": "casing_pressure_high", "kind": "limit", "tags": ["well_*.casing_pressure"], "priority": "high",
          "hi": {"setpoint": 950.0, "deadband": 20.0, "on_delay": "5s"},
          "hihi": {"setpoint": 1050.0, "deadband": 20.0, "priority": "critical"}},
         f"{tripping} builds casing pressure past these limits a few seconds into every 5-minute cycle"),
        ({"name": "low_flow", "kind": "limit", "tags": ["well_*.flow_rate"], "priority": "low",
          "lo": {"setpoint": 5.0, "on_delay": "30s"}}, "suppressed by design while the pump is off (below)"),
        ({"name": "tank_high", "kind": "limit", "tags": ["well_*.tank_level"], "priority": "medium",
          "hi": {"setpoint": 17.0, "deadband": 0.5}}, "a truck hauls at 18 ft"),
        ({"name": "comm_loss", "kind": "comm_loss", "sources": ["field-*"], "on_delay": "10s"},
         "one alarm per source that goes down; holds back that source's tag alarms"),
    ]
    parts = [_table("[[alarms.rules]]", r, c) for r, c in rules]
    parts.append(_table("[[alarms.suppression_groups]]", {
        "name": "pump_off", "condition_tag": "{asset}.pump_running", "when": "eq", "value": 0.0,
        "rules": ["low_flow"], "grace": "60s"}, "no flow is expected while the pump-off controller stops the pump"))
    return "\n".join(parts)


def demo_config(*, workdir: str, ports: DemoPorts, protocols: Collection[str], wells: int, token: str,
                alarms: bool) -> str:
    """The demo's ``ingestd.toml``: tenant ``demo`` on the local database, a source per protocol."""
    layout = Layout.of(wells, list(protocols))
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        f"# Written by `ingestd demo` on {stamp}; rewritten on every run. See config/example.toml for every key.\n"
        f"# Protocols registered in this build: {', '.join(layout.protocols)}.\n",
        _table("[daemon]", {"state_dir": f"{workdir}/state", "metrics_listen": f"127.0.0.1:{ports.metrics}",
                            "instance_id": "demo", "log_format": "text", "log_level": "info",
                            "shutdown_timeout": "5s"}),
        _table("[pipeline]", {"batch_max_age": "250ms"}),
        _table("[api]", {"listen": f"127.0.0.1:{ports.api}", "public_url": f"http://127.0.0.1:{ports.api}"}),
        _table("[[tenants]]", {"slug": TENANT, "name": "Demo Operating LLC",
                               "dsn": f"postgresql://postgres@127.0.0.1:{ports.postgres}/demo",
                               "api_tokens": [{"name": "demo", "hash": hash_token(token),
                                               "scopes": ["read", "ack", "admin"]}]},
               "the local database (trust authentication on 127.0.0.1, no password to hide)"),
        _table("[tenants.rollups]", {"timezone": "America/Chicago", "contract_hour": 9},
               "gas day: 09:00 Central"),
        *_sources(layout, ports),
    ]
    if alarms:
        parts.append(_alarms(layout))
    return "\n".join(parts)
