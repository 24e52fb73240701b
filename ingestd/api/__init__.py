"""Query API (HTTP + WebSocket) for dashboards, offline sync and ML — see ingestd/api/app.py."""
