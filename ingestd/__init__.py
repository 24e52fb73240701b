"""ingestd — the SCADA ingestion and alarm engine of WellOS."""

from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("ingestd")
except metadata.PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
