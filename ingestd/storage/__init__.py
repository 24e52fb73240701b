"""Storage layer: the only part of ingestd that talks to PostgreSQL (asyncpg/psycopg live here)."""
