"""Logging setup: human text or one JSON object per line, levels per module (DESIGN §8).

Secrets never reach log records by construction: :class:`~ingestd.config.types.Secret` reprs are
redacted and storage errors redact DSNs. As a second line of defence every formatted line — message
and traceback, our own and third-party libraries' — passes :func:`scrub`, which blanks URL
passwords (``scheme://user:secret@host``), ``password=…`` pairs and signed-URL query signatures.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Mapping
from typing import Any, Final

import orjson

__all__ = ["JsonFormatter", "TextFormatter", "apply_levels", "scrub", "setup_logging"]

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
_NOISY: Final = ("asyncua", "pymodbus", "aiomqtt", "paho", "asyncpg", "uvicorn.access")
"""Chatty libraries kept at WARNING unless named in ``daemon.log_levels``."""

_URL_PASSWORD: Final = re.compile(r"(?P<pre>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)[^@\s/]*(?P<at>@)")
_KV_PASSWORD: Final = re.compile(r"(?P<pre>\b(?:password|passwd|pwd|sslpassword)\s*[=:]\s*)(?P<q>['\"]?)[^\s'\",;&]+",
                                 re.IGNORECASE)
_URL_SIGNATURE: Final = re.compile(r"(?P<pre>[?&](?:sig|signature|token|access_token|code|key)=)[^&\s'\"]+",
                                   re.IGNORECASE)


def scrub(text: str) -> str:
    """Blank credentials that may hide in free text (library messages, exception strings)."""
    if "://" in text:
        text = _URL_PASSWORD.sub(r"\g<pre>***\g<at>", text)
        text = _URL_SIGNATURE.sub(r"\g<pre>***", text)
    if "pass" in text.lower() or "pwd" in text.lower():
        text = _KV_PASSWORD.sub(r"\g<pre>\g<q>***", text)
    return text


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``msg``, extra fields, ``exc``."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": scrub(record.getMessage()),
        }
        for k, v in record.__dict__.items():
            if k not in _RESERVED and not k.startswith("_"):
                out[k] = v if isinstance(v, int | float | bool | type(None)) else scrub(str(v))
        if record.exc_info:
            out["exc"] = scrub(self.formatException(record.exc_info))
        return orjson.dumps(out).decode()


def setup_logging(fmt: str = "text", level: str = "info", levels: Mapping[str, str] | None = None) -> None:
    """Install one stderr handler (journald reads stderr) and apply the levels."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    apply_levels(level, levels)


_configured: set[str] = set()


def apply_levels(level: str, levels: Mapping[str, str] | None = None) -> None:
    """Set the root level and per-module levels; modules dropped from ``levels`` since the last call
    go back to inheriting (used again on SIGHUP)."""
    levels = dict(levels or {})
    root = logging.getLogger()
    root.setLevel(level.upper())
    for name in _configured - set(levels):
        logging.getLogger(name).setLevel(logging.NOTSET)
    for name, lvl in levels.items():
        logging.getLogger(name).setLevel(lvl.upper())
    _configured.clear()
    _configured.update(levels)
    for noisy in _NOISY:
        if noisy not in levels:
            logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
