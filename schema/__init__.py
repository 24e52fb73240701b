"""SQL migrations applied to every tenant database (see ingestd.storage.migrate).

Files are ``NNN_name[.variant].sql``. For one number, the migrator picks the variant matching the
tenant's storage tier: ``.timescale``/``.apache``/``.postgres`` exact, then ``.timescaledb`` (both
TimescaleDB tiers), then the plain ``.sql``. Each file is idempotent and runs in one transaction;
``{{name}}`` placeholders are filled by the migrator with validated values.
"""
