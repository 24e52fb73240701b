"""The demo's environment: which simulated well is served over which protocol and where
(:mod:`.layout`), the ingestd configuration that reads them (:mod:`.democonfig`), and the local
PostgreSQL/TimescaleDB and Mosquitto the demo runs (:mod:`.services`).

Nothing here imports a protocol library: the protocol servers of the simulated field live in the
top-level ``simulator`` package, which ``ingestd demo`` starts as a separate process
(``python -m simulator``), so the core never imports it.
"""
