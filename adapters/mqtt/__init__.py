"""MQTT source with JSON payloads (aiomqtt). See README.md and sample.toml."""
