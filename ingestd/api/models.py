"""Request and response models of the query API (they generate the OpenAPI document).

Conventions: times are integers of µs since the Unix epoch (UTC) in fields ending ``_us``;
``quality`` is 0 GOOD, 1 UNCERTAIN, 2 BAD (as stored); ``value`` is ``null`` when the reading is BAD;
list answers carry ``next``: an opaque cursor for the next page, ``null`` on the last page.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from ..config.types import TAG_RE
from .params import GLOB_RE

__all__ = [
    "AckRequest",
    "ActionResult",
    "Alarm",
    "AlarmPage",
    "ChangeItem",
    "ChangePage",
    "Health",
    "HistoryPage",
    "JournalEntry",
    "KpiReport",
    "LatestQuery",
    "LatestResponse",
    "LiveItem",
    "OutOfServiceRequest",
    "Outage",
    "OutagePage",
    "Readiness",
    "Series",
    "SeriesResponse",
    "ShelveRequest",
    "SourceState",
    "SourcesResponse",
    "Tag",
    "TagPage",
    "UnshelveRequest",
]

Quality = Annotated[int, Field(ge=0, le=2, description="0 GOOD, 1 UNCERTAIN, 2 BAD")]
TagName = Annotated[str, StringConstraints(pattern=f"^{TAG_RE}$")]
GlobText = Annotated[str, StringConstraints(pattern=GLOB_RE)]
AlarmId = Annotated[str, StringConstraints(min_length=1, max_length=512)]
UserName = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")]
Comment = Annotated[str, StringConstraints(max_length=1000)]
Resolution = Literal["raw", "1m", "1h", "1d"]


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------------------------------------- tags, sources


class Tag(_Out):
    name: str
    source: str
    unit: str
    data_type: str
    description: str
    meta: dict[str, Any]
    created_us: int
    updated_us: int
    live: bool = Field(description="The tag is known to the running daemon (has or awaits live values).")


class TagPage(_Out):
    items: list[Tag]
    next: str | None


class SourceState(_Out):
    name: str
    protocol: str
    state: str = Field(description="Supervisor state: starting, running, backoff, parked, disabled, standby.")
    up: bool | None = Field(description="Connected; null until the source reported its status.")
    devices: dict[str, bool] = Field(description="Per-device up/down for sources with several devices.")
    last_error: str | None
    tags: int = Field(description="Tags of this tenant fed by the source.")


class SourcesResponse(_Out):
    items: list[SourceState]


class Outage(_Out):
    id: int
    source: str
    device: str
    down_us: int
    up_us: int | None = Field(description="null while the outage lasts.")
    reason: str


class OutagePage(_Out):
    items: list[Outage]
    next: str | None


# ---------------------------------------------------------------------------------------------- live values


class LiveItem(_Out):
    tag: str
    value: float | None
    quality: Quality | None = Field(description="null when no value was received since ingestd started.")
    status: int | None = Field(description="Raw protocol status code.")
    ts_us: int | None = Field(description="Source timestamp.")
    recv_us: int | None = Field(description="When ingestd received the value.")
    age_s: float | None = Field(description="Seconds since the source timestamp.")
    stale: bool = Field(description="The source is down, no value yet, or older than max_age.")


class LatestResponse(_Out):
    now_us: int
    items: list[LiveItem]
    missing: list[str] = Field(description="Requested tags this tenant does not know.")
    next: str | None


class LatestQuery(_In):
    tags: Annotated[list[TagName], Field(max_length=10_000)] = Field(default_factory=list)
    match: Annotated[list[GlobText], Field(max_length=100)] = Field(default_factory=list)
    max_age: Annotated[str, StringConstraints(max_length=32)] | None = Field(
        default=None, description="Values older than this (e.g. '5m') are flagged stale.")


# ---------------------------------------------------------------------------------------------- series


class Series(_Out):
    tag: str
    resolution: Resolution
    bucket_s: float | None = Field(description="Width of each point's bucket; null for raw points.")
    downsampled: Literal["lttb", "minmax", "rebucket", "sql"] | None
    truncated: bool = Field(description="More raw rows existed than were fetched (narrow the range).")
    ts_us: list[int]
    value: list[float | None] = Field(description="Raw value, or the bucket average.")
    quality: list[Quality] | None = None
    status: list[int] | None = None
    min: list[float | None] | None = None
    max: list[float | None] | None = None
    count: list[int] | None = Field(default=None, description="Non-null samples in the bucket.")
    non_good: list[int] | None = Field(default=None, description="UNCERTAIN or BAD samples in the bucket.")


class SeriesResponse(_Out):
    start_us: int
    end_us: int
    items: list[Series]
    missing: list[str]


# ---------------------------------------------------------------------------------------------- change feed


class ChangeItem(_Out):
    tag: str
    ts_us: int
    value: float | None
    quality: Quality
    status: int


class ChangePage(_Out):
    items: list[ChangeItem]
    cursor: str = Field(description="Pass as ?cursor= to get what follows (also when items is empty).")
    has_more: bool
    batches: int


# ---------------------------------------------------------------------------------------------- alarms


class ShelveInfoOut(_Out):
    kind: str
    until_us: int | None
    user: str
    reason: str
    at_us: int


class OosInfoOut(_Out):
    user: str
    reason: str
    at_us: int


class Alarm(_Out):
    alarm_id: str
    tag: str
    rule: str
    state: str
    display_state: str
    priority: str | None
    level: str | None
    value: float | None
    limit: float | None
    event_id: str | None
    active_since_us: int | None
    episode_since_us: int | None
    acked_by: str | None
    acked_at_us: int | None
    shelved: ShelveInfoOut | None
    out_of_service: OosInfoOut | None
    suppressed: bool
    inhibited: bool
    chattering: bool
    stale: bool


class AlarmPage(_Out):
    items: list[Alarm]
    next: str | None


class JournalEntry(_Out):
    alarm_id: str
    seq: int
    at_us: int
    kind: str
    from_state: str
    to_state: str
    event_id: str | None
    priority: str | None
    level: str | None
    value: float | None
    limit: float | None
    user: str
    comment: str
    reason: str


class HistoryPage(_Out):
    items: list[JournalEntry]
    next: str | None


class KpiReport(_Out):
    start_us: int
    end_us: int
    kpis: dict[str, Any] = Field(description="KPI name → value, as computed by the alarm engine.")


class AckRequest(_In):
    alarm_id: AlarmId
    event_id: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = Field(
        default=None, description="Acknowledge only if this episode is still the current one.")
    comment: Comment = ""
    user: UserName | None = Field(default=None, description="Operator name for the journal (default: token name).")


class ShelveRequest(_In):
    alarm_id: AlarmId
    kind: Literal["timed", "one_shot"] = "timed"
    duration: Annotated[str, StringConstraints(max_length=32)] | None = Field(
        default=None, description="Timed shelving: how long, e.g. '30m', '2h' (at most the tenant's max_shelve).")
    reason: Annotated[str, StringConstraints(min_length=1, max_length=1000)]
    user: UserName | None = None


class UnshelveRequest(_In):
    alarm_id: AlarmId
    comment: Comment = ""
    user: UserName | None = None


class OutOfServiceRequest(_In):
    alarm_id: AlarmId
    out_of_service: bool = Field(description="true: remove from service; false: return to service.")
    reason: Comment = ""
    user: UserName | None = None


class ActionResult(_Out):
    alarm: Alarm


# ---------------------------------------------------------------------------------------------- operations


class Health(_Out):
    status: Literal["ok"]


class DatabaseState(_Out):
    healthy: bool
    tier: str | None
    last_error: str | None
    spool_rows: int
    spool_bytes: int


class Readiness(_Out):
    ready: bool
    tenant: str
    reasons: list[str]
    database: DatabaseState
    sources: list[SourceState]
