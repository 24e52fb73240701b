"""Load and validate a config file, reporting every problem at once with its key path.

>>> cfg = load_config(Path("config/example.toml"), REGISTRY)

Errors are :class:`~ingestd.errors.ConfigError` with problems such as
``sources[2].tags[5].address: 70000 is outside 0..65535``. Messages never include secret values.
"""

from __future__ import annotations

import tomllib
import urllib.parse
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import Field, ValidationError, create_model
from pydantic_core import ErrorDetails

from alarms.config import AlarmsConfig
from alarms.config_rules import RULE_KINDS

from ..errors import ConfigError, ConfigProblem
from ..ports import AdapterRegistry
from .base import Frozen, SourceConfig
from .model import ApiConfig, CoordinationConfig, DaemonConfig, PipelineConfig, TenantConfig
from .types import SecretUnavailable

__all__ = ["IngestdConfig", "format_loc", "load_config", "parse_config"]


class IngestdConfig(Frozen):
    """The whole configuration. ``sources`` holds adapter-specific subclasses of SourceConfig."""

    daemon: DaemonConfig = DaemonConfig()
    pipeline: PipelineConfig = PipelineConfig()
    api: ApiConfig = ApiConfig()
    coordination: CoordinationConfig = CoordinationConfig()
    tenants: list[TenantConfig]
    sources: list[SourceConfig] = Field(default_factory=list)
    alarms: AlarmsConfig = AlarmsConfig()

    def tenant(self, slug: str) -> TenantConfig:
        for t in self.tenants:
            if t.slug == slug:
                return t
        raise KeyError(slug)

    def source_tenant(self, src: SourceConfig) -> str:
        """The tenant a source writes to by default (validated to exist)."""
        if src.tenant is not None:
            return src.tenant
        return self.tenants[0].slug


def format_loc(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


_MESSAGES = {
    "missing": "required key is missing",
    "extra_forbidden": "unknown key (check the spelling; see config/*.toml for the documented keys)",
}


def _problem(err: ErrorDetails, protocols: set[str]) -> ConfigProblem:
    loc = list(err["loc"])
    # Discriminated unions put the tag (the protocol) into the location: drop it.
    cleaned: list[int | str] = []
    for i, part in enumerate(loc):
        if isinstance(part, str) and i > 0 and isinstance(loc[i - 1], int) and part in protocols \
                and cleaned[:1] == ["sources"] and len(cleaned) == 2:
            continue
        if isinstance(part, str) and i > 0 and isinstance(loc[i - 1], int) and part in RULE_KINDS \
                and cleaned[:2] == ["alarms", "rules"] and len(cleaned) == 3:
            continue
        cleaned.append(part)
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind in _MESSAGES:
        msg = _MESSAGES[kind]
    elif kind == "union_tag_invalid" and cleaned[:2] == ["alarms", "rules"]:
        msg = f"unknown rule kind {ctx.get('tag')!r} (known: {', '.join(RULE_KINDS)})"
        cleaned.append("kind")
    elif kind == "union_tag_invalid":
        msg = f"unknown protocol {ctx.get('tag')!r} (known: {', '.join(sorted(protocols))})"
        cleaned.append("protocol")
    elif kind == "union_tag_not_found":
        msg = f"required key is missing (one of: {', '.join(sorted(protocols))})"
        cleaned.append("protocol")
    elif kind in ("value_error", "assertion_error"):
        msg = str(ctx.get("error", err["msg"]))
    elif kind in ("literal_error", "enum"):
        msg = f"must be one of {ctx.get('expected', '')}"
    else:
        msg = err["msg"]
        # pydantic's messages never include the offending input; keep it that way for secrets,
        # but add the value for plain numbers and short strings where it helps.
        inp = err.get("input")
        if isinstance(inp, int | float) and not isinstance(inp, bool):
            msg = f"{inp}: {msg[0].lower()}{msg[1:]}"
    return ConfigProblem(format_loc(cleaned), msg)


def _root_model(registry: AdapterRegistry) -> type[IngestdConfig]:
    models = [registry[p].config_model() for p in registry.protocols()]
    if not models:
        return IngestdConfig
    union: Any = models[0] if len(models) == 1 else Union[tuple(models)]  # noqa: UP007
    item = Annotated[union, Field(discriminator="protocol")]
    return create_model(
        "IngestdConfig", __base__=IngestdConfig, sources=(list[item], Field(default_factory=list))
    )


def _cross_checks(cfg: IngestdConfig) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    slugs = [t.slug for t in cfg.tenants]
    for slug, n in Counter(slugs).items():
        if n > 1:
            problems.append(ConfigProblem(f"tenants[{slugs.index(slug)}].slug", f"duplicate tenant {slug!r}"))
    names = [s.name for s in cfg.sources]
    for i, s in enumerate(cfg.sources):
        if names.index(s.name) != i:
            problems.append(ConfigProblem(f"sources[{i}].name", f"duplicate source name {s.name!r}"))
        if s.tenant is None and len(slugs) > 1:
            problems.append(ConfigProblem(f"sources[{i}].tenant",
                                          "required when several tenants are configured"))
        elif s.tenant is not None and s.tenant not in slugs:
            problems.append(ConfigProblem(f"sources[{i}].tenant", f"unknown tenant {s.tenant!r}"))
    seen: dict[tuple[str, str], str] = {}
    for i, s in enumerate(cfg.sources):
        default_tenant = s.tenant or (slugs[0] if slugs else "")
        for j, t in enumerate(s.tags):
            tenant = t.tenant or default_tenant
            path = f"sources[{i}].tags[{j}]"
            if t.tenant is not None and t.tenant not in slugs:
                problems.append(ConfigProblem(f"{path}.tenant", f"unknown tenant {t.tenant!r}"))
            key = (tenant, t.name)
            if key in seen:
                problems.append(ConfigProblem(f"{path}.name", f"tag {t.name!r} is already defined at {seen[key]}"))
            else:
                seen[key] = path
    return problems


def parse_config(data: Mapping[str, Any], registry: AdapterRegistry, *, file: str | None = None) -> IngestdConfig:
    protocols = set(registry.protocols())
    model = _root_model(registry)
    try:
        cfg = model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([_problem(e, protocols) for e in exc.errors(include_url=False)], file=file) from None
    problems = _cross_checks(cfg)
    if problems:
        raise ConfigError(problems, file=file)
    return cfg


def load_config(path: Path | str, registry: AdapterRegistry) -> IngestdConfig:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError([ConfigProblem("", f"cannot read {path}: {exc.strerror}")], file=str(path)) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigProblem("", f"not valid TOML: {exc}")], file=str(path)) from None
    return parse_config(data, registry, file=str(path))


_INLINE = "secret is written inline; prefer env:, file: or credential:"


def _sslmode(dsn: str) -> str:
    """The sslmode of a URL or key=value DSN (libpq's default is ``prefer``)."""
    if "://" in dsn:
        query = urllib.parse.urlsplit(dsn).query
        return urllib.parse.parse_qs(query).get("sslmode", ["prefer"])[-1]
    for part in dsn.split():
        key, _, value = part.partition("=")
        if key.strip() == "sslmode":
            return value.strip().strip("'")
    return "prefer"


def warnings(cfg: IngestdConfig) -> list[ConfigProblem]:
    """Non-fatal findings shown by ``check-config``: inline secrets, plain-text connections."""
    out: list[ConfigProblem] = []
    for i, t in enumerate(cfg.tenants):
        if t.dsn.is_inline:
            out.append(ConfigProblem(f"tenants[{i}].dsn", _INLINE))
        try:
            mode = _sslmode(t.dsn.reveal())
        except SecretUnavailable as exc:
            out.append(ConfigProblem(f"tenants[{i}].dsn", f"cannot check the DSN: {exc}"))
        except ValueError:
            out.append(ConfigProblem(f"tenants[{i}].dsn", "cannot parse the DSN"))
        else:
            if mode not in ("verify-full", "verify-ca"):
                out.append(ConfigProblem(f"tenants[{i}].dsn", f"database connection is not verified "
                                                              f"(sslmode={mode}); use sslmode=verify-full"))
    p = cfg.pipeline
    if p.batch_max_age > p.durability_deadline:
        out.append(ConfigProblem("pipeline.batch_max_age", f"{p.batch_max_age:g}s exceeds durability_deadline "
                                 f"{p.durability_deadline:g}s: readings may wait longer than the deadline before "
                                 "they are committed or spooled"))
    if p.spool.fsync == "never":
        out.append(ConfigProblem("pipeline.spool.fsync", '"never": spooled readings are lost on power failure '
                                 "(and MQTT acknowledges them before they are on disk)"))
    for i, s in enumerate(cfg.sources):
        for path, msg in _source_warnings(s):
            out.append(ConfigProblem(f"sources[{i}].{path}" if path else f"sources[{i}]", msg))
    return out


def _source_warnings(src: SourceConfig) -> Sequence[tuple[str, str]]:
    hook = getattr(src, "security_warnings", None)
    return list(hook()) if callable(hook) else []
