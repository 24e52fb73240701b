"""Reusable config field types: durations, byte sizes, secrets, ranged numbers, identifiers.

Config is parsed once into frozen pydantic models; these types give clear, path-addressable errors
("70000 is outside 0..65535") and keep secrets out of reprs, logs and error messages.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Final

from pydantic import AfterValidator, BeforeValidator, GetCoreSchemaHandler, PlainSerializer
from pydantic_core import core_schema

__all__ = [
    "ByteSize",
    "Duration",
    "Identifier",
    "Port",
    "Secret",
    "SecretUnavailable",
    "Slug",
    "TagName",
    "between",
    "parse_bytes",
    "parse_duration",
]

_DURATION_RE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|µs|ms|s|m|h|d|w)?\s*$")
_DURATION_UNITS: Final = {
    None: 1.0, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0,
    "w": 7 * 86400.0,
}
_BYTES_RE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|KiB|MB|MiB|GB|GiB|TB|TiB)?\s*$", re.IGNORECASE)
_BYTE_UNITS: Final = {
    "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2, "gb": 1000**3, "gib": 1024**3,
    "tb": 1000**4, "tib": 1024**4,
}


def parse_duration(value: Any) -> float:
    """Parse ``"250ms"``, ``"1.5s"``, ``"5m"``, ``"90d"`` or a number of seconds into seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as '250ms', '5s', '10m', '90d'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        m = _DURATION_RE.match(value)
        if not m:
            raise ValueError(f"{value!r} is not a duration (use e.g. '250ms', '5s', '10m', '2h', '90d')")
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    else:
        raise ValueError("expected a duration such as '250ms', '5s', '10m', '90d'")
    if seconds < 0 or seconds != seconds or seconds == float("inf"):
        raise ValueError(f"{value!r} must be a finite, non-negative duration")
    return seconds


def parse_bytes(value: Any) -> int:
    """Parse ``"512MiB"``, ``"2GB"`` or an integer number of bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as '512MiB' or '2GB'")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str):
        m = _BYTES_RE.match(value)
        if not m:
            raise ValueError(f"{value!r} is not a size (use e.g. '64MiB', '2GB')")
        n = int(float(m.group(1)) * _BYTE_UNITS[(m.group(2) or "b").lower()])
    else:
        raise ValueError("expected a size such as '512MiB' or '2GB'")
    if n < 0:
        raise ValueError(f"{value!r} must not be negative")
    return n


def between(lo: float, hi: float) -> AfterValidator:
    """Validator giving the message ``"70000 is outside 0..65535"``."""

    def check(v: Any) -> Any:
        if not lo <= v <= hi:
            raise ValueError(f"{v} is outside {lo:g}..{hi:g}")
        return v

    return AfterValidator(check)


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""Seconds, written in config as ``"250ms"``, ``"5s"``, ``"10m"``, ``"90d"`` or a plain number."""

ByteSize = Annotated[int, BeforeValidator(parse_bytes)]
Port = Annotated[int, between(0, 65535)]


def _pattern(regex: str, what: str) -> AfterValidator:
    compiled = re.compile(regex)

    def check(v: str) -> str:
        if not compiled.fullmatch(v):
            raise ValueError(f"{v!r} is not a valid {what} (must match {regex})")
        return v

    return AfterValidator(check)


SLUG_RE: Final = r"[a-z][a-z0-9_]{0,31}"
TAG_RE: Final = r"[A-Za-z0-9][A-Za-z0-9_.:/#+\-]{0,199}"
IDENT_RE: Final = r"[A-Za-z][A-Za-z0-9_.\-]{0,63}"

Slug = Annotated[str, _pattern(SLUG_RE, "tenant slug")]
"""Tenant slug: lowercase letters, digits and underscores, starting with a letter. Safe in SQL and paths."""
TagName = Annotated[str, _pattern(TAG_RE, "tag name")]
Identifier = Annotated[str, _pattern(IDENT_RE, "name")]


class SecretUnavailable(ValueError):
    """A secret reference could not be resolved (env var unset, file missing). Never contains the value."""


class Secret:
    """A secret value or a reference to one. Its repr and str never reveal the value.

    Written in config as one of::

        "env:ACME_DSN"            environment variable
        "file:/etc/ingestd/dsn"   file contents (trailing newline stripped)
        "credential:acme_dsn"     systemd credential ($CREDENTIALS_DIRECTORY/acme_dsn, LoadCredential=)
        "literal text"            inline value (allowed, but flagged by ``ingestd check-config``)
    """

    __slots__ = ("_kind", "_ref")

    def __init__(self, spec: str) -> None:
        kind, sep, ref = spec.partition(":")
        if sep and kind in ("env", "file", "credential") and ref:
            self._kind, self._ref = kind, ref
        else:
            self._kind, self._ref = "literal", spec

    @property
    def kind(self) -> str:
        return self._kind

    @property
    def is_inline(self) -> bool:
        return self._kind == "literal"

    def describe(self) -> str:
        """Where the secret comes from, safe to print (``env:ACME_DSN``, never the value)."""
        return "<inline secret>" if self.is_inline else f"{self._kind}:{self._ref}"

    def reveal(self) -> str:
        """Resolve and return the secret. Raises :class:`SecretUnavailable` (without the value)."""
        if self._kind == "literal":
            return self._ref
        if self._kind == "env":
            v = os.environ.get(self._ref)
            if v is None:
                raise SecretUnavailable(f"environment variable {self._ref} is not set")
            return v
        if self._kind == "file":
            path = Path(self._ref)
        else:
            cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
            if not cred_dir:
                raise SecretUnavailable(
                    f"credential {self._ref!r} requested but CREDENTIALS_DIRECTORY is not set "
                    "(use LoadCredential= in the systemd unit)"
                )
            path = Path(cred_dir) / self._ref
        try:
            return path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise SecretUnavailable(f"cannot read secret file {path}: {exc.strerror}") from None

    def __repr__(self) -> str:
        return f"Secret({self.describe()})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and (self._kind, self._ref) == (other._kind, other._ref)

    def __hash__(self) -> int:
        return hash((self._kind, self._ref))

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        def build(v: Any) -> Secret:
            if isinstance(v, Secret):
                return v
            if not isinstance(v, str) or not v:
                raise ValueError("expected a non-empty string ('env:NAME', 'file:/path', 'credential:NAME' or a value)")
            return Secret(v)

        return core_schema.no_info_plain_validator_function(
            build, serialization=core_schema.plain_serializer_function_ser_schema(lambda s: s.describe())
        )


SecretField = Annotated[Secret, PlainSerializer(lambda s: s.describe())]
