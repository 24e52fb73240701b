"""The pipeline: routing, filtering, live cache, per-tenant inbox/batcher/writer, supervision."""
