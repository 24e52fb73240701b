"""SQL identifier safety: every identifier that is not a literal in our SQL goes through here."""

from __future__ import annotations

import re
from typing import Final

__all__ = ["ident", "interval_literal"]

_IDENT: Final = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def ident(name: str) -> str:
    """Return ``name`` quoted as an SQL identifier after checking it against a strict pattern."""
    if not _IDENT.fullmatch(name):
        raise ValueError(f"unsafe SQL identifier {name!r}")
    return f'"{name}"'


def interval_literal(seconds: float) -> str:
    """``'86400 seconds'`` for a positive number of seconds (used inside INTERVAL '...')."""
    if not seconds > 0 or seconds != seconds:
        raise ValueError(f"interval must be positive, got {seconds!r}")
    return f"{int(seconds)} seconds" if float(seconds).is_integer() else f"{seconds:.6f} seconds"
