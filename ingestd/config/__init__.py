"""Configuration: TOML parsed once into frozen pydantic models (see :mod:`ingestd.config.load`).

This package's ``__init__`` stays import-light on purpose: adapters and alarms import
``ingestd.config.base`` / ``ingestd.config.types`` and the root model imports them back.
"""
