"""Notification channels. Only this package may import httpx (import-linter contract)."""
