"""Every protocol adapter, one line each. Adding a protocol = one folder + one line here.

Paths are strings so that importing this registry never imports a protocol library.
"""

from __future__ import annotations

from ingestd.ports import AdapterRegistry, AdapterSpec

__all__ = ["REGISTRY"]

REGISTRY = AdapterRegistry([
    AdapterSpec("mqtt", "adapters.mqtt.config:MqttSourceConfig", "adapters.mqtt.source:MqttSource",
                "MQTT with JSON payloads"),
    AdapterSpec("sparkplug", "adapters.sparkplug.config:SparkplugSourceConfig",
                "adapters.sparkplug.source:SparkplugSource", "Sparkplug B host application"),
    AdapterSpec("modbus", "adapters.modbus.config:ModbusSourceConfig", "adapters.modbus.source:ModbusSource",
                "Modbus TCP polling"),
    AdapterSpec("opcua", "adapters.opcua.config:OpcUaSourceConfig", "adapters.opcua.source:OpcUaSource",
                "OPC UA subscriptions/polling"),
])
