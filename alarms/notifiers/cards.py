"""Adaptive Card 1.2 builders for Teams Workflows webhooks (pure: no I/O, no httpx).

Envelope (reference/alarms.md §4.3)::

    {"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
                                         "contentUrl": null, "content": <AdaptiveCard 1.2>}]}

Cards stay within AC 1.2 (reliable on Teams mobile) and use only webhook-supported actions
(``Action.OpenUrl``). Every card shows the stable event id and sequence (``evt-…#seq``) so a duplicate from
an at-least-once retry is recognisable. Sizes are measured as UTF-8 bytes of the exact body sent;
grouped cards drop trailing alarms and say "and N more" to fit the budget (default 25 KB; Teams: 28 KB).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from ..dispatch import FloodSummary
from ..model import IntentKind, NotificationIntent, Priority

__all__ = [
    "CONTENT_TYPE",
    "HARD_LIMIT_BYTES",
    "TARGET_BYTES",
    "PayloadTooLarge",
    "alarm_card",
    "encode",
    "envelope",
    "flood_card",
    "group_card",
    "render_alarm",
    "render_flood",
    "render_group",
]

CONTENT_TYPE: Final = "application/vnd.microsoft.card.adaptive"
SCHEMA: Final = "http://adaptivecards.io/schemas/adaptive-card.json"
HARD_LIMIT_BYTES: Final = 28_000
TARGET_BYTES: Final = 25_000
_MAX_TEXT: Final = 1500
_ICON: Final = {Priority.CRITICAL: "🔴", Priority.HIGH: "🟠", Priority.MEDIUM: "🟡", Priority.LOW: "🔵"}
_COLOR: Final = {Priority.CRITICAL: "Attention", Priority.HIGH: "Attention", Priority.MEDIUM: "Warning",
                 Priority.LOW: "Accent"}
_VERB: Final = {
    IntentKind.RAISE: "", IntentKind.UPDATE: "UPDATE", IntentKind.RESOLVE: "RESOLVED", IntentKind.REMINDER: "REMINDER",
    IntentKind.ESCALATE: "ESCALATED", IntentKind.CHATTERING: "CHATTERING",
}
_REASONS: Final = {
    "activated": "Alarm raised", "escalated": "Escalated to a more severe limit", "realarm": "Re-alarm: still active",
    "reactivated": "Active again (same episode)", "returned_unacked": "Returned to normal — not yet acknowledged",
    "acknowledged": "Acknowledged", "resolved": "Returned to normal", "reset": "Reset by operator",
    "disabled": "Alarm disabled / removed from configuration", "reminder": "Still unacknowledged",
    "unacknowledged": "Not acknowledged in time", "chattering": "Chattering: notifications held until it settles",
    "chatter_cleared": "Stopped chattering", "expired": "Shelving expired — still active",
    "unshelved": "Unshelved — still active", "unsuppressed": "Suppression ended — still active",
    "returned_to_service": "Back in service — still active", "comms_restored": "Comms restored — in alarm",
}


class PayloadTooLarge(ValueError):
    """Even the smallest rendering exceeds the byte budget."""


def _clip(s: str, n: int = _MAX_TEXT) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def fmt_time(t_us: int | None) -> str:
    if t_us is None:
        return "—"
    return datetime.fromtimestamp(t_us / 1e6, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def fmt_value(i: NotificationIntent) -> str:
    if i.value is None:
        return "—"
    unit = f" {i.unit}" if i.unit else ""
    s = f"{i.value:.6g}{unit}"
    if i.limit is not None:
        s += f" (limit {i.limit:.6g}{unit})"
    return s


def _title(i: NotificationIntent) -> str:
    what = f"{i.tag} {i.level.value}" if i.level is not None else f"{i.tag} ({i.rule_kind or i.rule})"
    verb = _VERB[i.kind]
    prefix = "✅ RESOLVED" if i.kind is IntentKind.RESOLVE else f"{_ICON[i.priority]} {i.priority.value.upper()}"
    if verb and i.kind is not IntentKind.RESOLVE:
        prefix += f" · {verb}"
    return _clip(f"{prefix} — {what}", 200)


def envelope(card: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "message", "attachments": [{"contentType": CONTENT_TYPE, "contentUrl": None, "content": card}]}


def encode(payload: Mapping[str, Any]) -> bytes:
    """The exact request body (compact JSON, UTF-8, emoji kept as UTF-8: what Teams counts)."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _card(body: list[dict[str, Any]], actions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    card: dict[str, Any] = {"$schema": SCHEMA, "type": "AdaptiveCard", "version": "1.2",
                            "msteams": {"width": "Full"}, "body": body}
    if actions:
        card["actions"] = actions
    return card


def _heading(text: str, color: str) -> dict[str, Any]:
    return {"type": "TextBlock", "text": text, "wrap": True, "size": "Medium", "weight": "Bolder", "color": color}


def alarm_card(i: NotificationIntent, *, ack_url: str | None = None, details_url: str | None = None) -> dict[str, Any]:
    """One alarm: title with priority and tag, value vs limit, state, since, site, event id + sequence."""
    color = "Good" if i.kind is IntentKind.RESOLVE else _COLOR[i.priority]
    facts = [
        {"title": "Site", "value": _clip(i.site or "—", 200)},
        {"title": "Value", "value": fmt_value(i)},
        {"title": "State", "value": i.state.value + (f" (acknowledged by {_clip(i.acked_by, 80)})" if i.acked_by
                                                     and i.kind is not IntentKind.RAISE else "")},
        {"title": "Since", "value": fmt_time(i.since)},
        {"title": "Priority", "value": i.priority.value},
        {"title": "Rule", "value": _clip(f"{i.rule} ({i.rule_kind})" if i.rule_kind else i.rule, 200)},
        {"title": "Event", "value": f"{i.event_id} #{i.seq}"},
    ]
    body: list[dict[str, Any]] = [_heading(_title(i), color)]
    body.append({"type": "TextBlock", "text": _REASONS.get(i.reason, i.reason), "wrap": True, "isSubtle": True,
                 "spacing": "None"})
    if i.description:
        body.append({"type": "TextBlock", "text": _clip(i.description), "wrap": True})
    body.append({"type": "FactSet", "facts": facts})
    actions = []
    if ack_url:
        actions.append({"type": "Action.OpenUrl", "title": "Acknowledge", "url": ack_url})
    if details_url:
        actions.append({"type": "Action.OpenUrl", "title": "Open alarm", "url": details_url})
    return _card(body, actions)


def _line(i: NotificationIntent, ack_url: str | None) -> dict[str, Any]:
    level = f"**{i.level.value}** " if i.level is not None else ""
    verb = _VERB[i.kind] or "RAISED"
    text = (f"{_ICON[i.priority]} {level}{_clip(i.tag, 200)} = {fmt_value(i)} · {verb} · {i.state.value} · "
            f"since {fmt_time(i.since)} · {i.event_id}#{i.seq}")
    if ack_url:
        text += f" · [Acknowledge]({ack_url})"
    return {"type": "TextBlock", "text": text, "wrap": True, "spacing": "Small"}


def group_card(items: Sequence[NotificationIntent], *, title: str, ack_urls: Mapping[str, str] | None = None,
               more: int = 0) -> dict[str, Any]:
    """Several alarms of one group (site) in one card; ``more`` adds the "and N more" line."""
    ack_urls = ack_urls or {}
    worst = min((i.priority for i in items), key=lambda p: p.rank, default=Priority.LOW)
    all_resolved = bool(items) and all(i.kind is IntentKind.RESOLVE for i in items)
    body = [_heading(_clip(title, 200), "Good" if all_resolved else _COLOR[worst])]
    body += [_line(i, ack_urls.get(i.dedup_key)) for i in items]
    if more:
        body.append({"type": "TextBlock", "text": f"… and {more} more", "wrap": True, "weight": "Bolder"})
    return _card(body)


def flood_card(s: FloodSummary, *, top_n: int = 10) -> dict[str, Any]:
    state = "ALARM FLOOD" if s.active else "Alarm flood ended"
    title = f"{'🌊' if s.active else '✅'} {state} — tenant {s.tenant}"
    facts = [
        {"title": "Since", "value": fmt_time(s.since)},
        {"title": "Now", "value": fmt_time(s.at)},
        {"title": "Alarms in last window", "value": str(s.in_window)},
        {"title": "Notifications summarised", "value": str(s.held)},
        {"title": "By priority", "value": ", ".join(f"{k}: {v}" for k, v in s.by_priority.items()) or "—"},
        {"title": "Summary", "value": f"flood-{s.tenant}-{s.since} #{s.sequence}"},
    ]
    body: list[dict[str, Any]] = [_heading(title, "Attention" if s.active else "Good")]
    body.append({"type": "TextBlock", "wrap": True, "isSubtle": True, "spacing": "None",
                 "text": "Individual cards are paused during the flood (critical alarms still page). "
                         "Check the alarm list for details."})
    body.append({"type": "FactSet", "facts": facts})
    if s.top:
        lines = [f"{_clip(tag, 120)} × {n}" for tag, n in list(s.top)[:top_n]]
        body.append({"type": "TextBlock", "text": "Most frequent:\n\n- " + "\n- ".join(lines), "wrap": True})
    return _card(body)


# ------------------------------------------------------------------------------------------- rendering


def render_alarm(i: NotificationIntent, *, ack_url: str | None = None, details_url: str | None = None,
                 max_bytes: int = TARGET_BYTES) -> bytes:
    body = encode(envelope(alarm_card(i, ack_url=ack_url, details_url=details_url)))
    if len(body) > max_bytes:
        raise PayloadTooLarge(f"alarm card is {len(body)} bytes (budget {max_bytes})")
    return body


def render_group(items: Sequence[NotificationIntent], *, title: str, ack_urls: Mapping[str, str] | None = None,
                 max_bytes: int = TARGET_BYTES) -> tuple[bytes, int]:
    """Render as many items as fit in ``max_bytes``; returns (body, number of items shown)."""
    def build(k: int) -> bytes:
        return encode(envelope(group_card(items[:k], title=title, ack_urls=ack_urls, more=len(items) - k)))

    return _fit(build, len(items), max_bytes)


def render_flood(s: FloodSummary, *, max_bytes: int = TARGET_BYTES) -> bytes:
    body, _ = _fit(lambda k: encode(envelope(flood_card(s, top_n=k))), min(len(s.top), 10), max_bytes)
    return body


def _fit(build: Callable[[int], bytes], n: int, max_bytes: int) -> tuple[bytes, int]:
    body = build(n)
    if len(body) <= max_bytes:
        return body, n
    lo, hi = 0, n  # largest k with size <= max_bytes (size grows with k)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(build(mid)) <= max_bytes:
            lo = mid
        else:
            hi = mid - 1
    body = build(lo)
    if len(body) > max_bytes:
        raise PayloadTooLarge(f"card does not fit in {max_bytes} bytes even with no items")
    return body, lo
