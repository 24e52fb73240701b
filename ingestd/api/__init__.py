"""Query API (HTTP + WebSocket) — see ingestd/api/app.py."""
