"""OPC UA source (asyncua): subscriptions or polling, security, browse. See README.md and sample.toml."""
