"""Pure mapping of Sparkplug identities (group, edge node, device, metric) to tenant and tag names.

Templates use ``{group}``, ``{node}``, ``{device}`` and ``{metric}``. The rendered tag is then made a
valid core tag name (``[A-Za-z0-9][A-Za-z0-9_.:/#+\\-]{0,199}``) by :func:`sanitize_tag`:

1. every run of characters outside ``A-Z a-z 0-9 _ . : / # + -`` becomes one ``_``
   (``"Motor 1/Speed (rpm)"`` → ``"Motor_1/Speed_rpm_"``; ``/`` is kept, it is allowed);
2. leading characters other than letters and digits are dropped;
3. a result longer than 200 characters is cut to 191 and suffixed with ``-`` and the first 8 hex
   digits of the SHA-1 of the unsanitised name, so long names stay distinct;
4. an empty result is not a tag (the metric is rejected with reason ``bad_tag_name``).

Tenant templates are lower-cased and every run outside ``a-z 0-9 _`` becomes ``_``; leading
non-letters are dropped and the result is cut to 32 characters (the tenant slug pattern).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Final

from ingestd.config.types import SLUG_RE, TAG_RE

__all__ = ["FIELDS", "check_template", "render", "sanitize_tag", "sanitize_tenant", "template_fields"]

FIELDS: Final = frozenset({"group", "node", "device", "metric"})

_PLACEHOLDER: Final = re.compile(r"\{([^{}]*)\}")
_TAG_BAD: Final = re.compile(r"[^A-Za-z0-9_.:/#+\-]+")
_TAG_OK: Final = re.compile(TAG_RE)
_TENANT_BAD: Final = re.compile(r"[^a-z0-9_]+")
_SLUG_OK: Final = re.compile(SLUG_RE)
_MAX_TAG: Final = 200


def template_fields(template: str) -> set[str]:
    return set(_PLACEHOLDER.findall(template))


def check_template(template: str, allowed: Iterable[str], required: Iterable[str] = ()) -> str:
    """Validate a template at config load (raises ValueError with a readable message)."""
    allowed_set = set(allowed)
    used = template_fields(template)
    unknown = used - allowed_set
    if unknown:
        raise ValueError(f"template {template!r} uses {sorted(unknown)}; allowed here: {sorted(allowed_set)}")
    missing = set(required) - used
    if missing:
        raise ValueError(f"template {template!r} must use {sorted('{' + m + '}' for m in missing)}")
    stripped = _PLACEHOLDER.sub("", template)
    if "{" in stripped or "}" in stripped:
        raise ValueError(f"template {template!r} has an unbalanced brace")
    if not template.strip():
        raise ValueError("template must not be empty")
    return template


def render(template: str, fields: Mapping[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: fields[m.group(1)], template)


def sanitize_tag(raw: str) -> str | None:
    """A valid core tag name for ``raw`` (deterministic, see the module docstring), or None."""
    if len(raw) <= _MAX_TAG and _TAG_OK.fullmatch(raw):
        return raw
    s = _TAG_BAD.sub("_", raw).lstrip("_.:/#+-")
    if len(s) > _MAX_TAG:
        s = s[: _MAX_TAG - 9] + "-" + hashlib.sha1(raw.encode(), usedforsecurity=False).hexdigest()[:8]
    return s if s and _TAG_OK.fullmatch(s) else None


def sanitize_tenant(raw: str) -> str | None:
    s = _TENANT_BAD.sub("_", raw.lower()).lstrip("_0123456789")[:32]
    return s if _SLUG_OK.fullmatch(s) else None
