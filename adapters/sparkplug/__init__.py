"""Sparkplug B host application (MQTT + protobuf). See README.md and sample.toml."""
