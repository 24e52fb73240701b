"""Card builder (scenario 48), signed acknowledge links, per-webhook rate limiter."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl, urlsplit

import pytest

from alarms.dispatch import FloodSummary
from alarms.errors import LinkExpired, LinkInvalid
from alarms.links import AckLinks
from alarms.model import AlarmState, IntentKind, Level, NotificationIntent, Priority
from alarms.notifiers.cards import (
    CONTENT_TYPE,
    PayloadTooLarge,
    alarm_card,
    encode,
    envelope,
    render_alarm,
    render_flood,
    render_group,
)
from alarms.notifiers.ratelimit import SlidingWindow, TokenBucket, WebhookLimiter
from alarms.testing import T0

KEY = "k" * 32


def intent(n: int = 1, **kw: object) -> NotificationIntent:
    base: dict[str, object] = {
        "kind": IntentKind.RAISE, "reason": "activated", "tenant": "acme",
        "alarm_id": f"cp@well_{n}/casing_pressure", "event_id": f"evt-{n:016x}", "seq": 3, "occurrence": 1,
        "at": T0, "priority": Priority.CRITICAL, "state": AlarmState.UNACK_ACTIVE, "level": Level.HIHI,
        "value": 1482.0, "limit": 1450.0, "since": T0, "tag": f"well_{n}/casing_pressure", "rule": "cp",
        "rule_kind": "limit", "site": f"well_{n}", "unit": "psi",
        "description": "Casing pressure high-high — check the choke 🔥",
    }
    base.update(kw)
    return NotificationIntent(**base)  # type: ignore[arg-type]


def test_alarm_card_envelope_and_content() -> None:
    links = AckLinks(KEY, "https://wellos.example/api")
    url = links.url("acme", intent().alarm_id, intent().event_id, T0)
    payload = json.loads(render_alarm(intent(), ack_url=url))
    assert payload["type"] == "message"
    (att,) = payload["attachments"]
    assert att["contentType"] == CONTENT_TYPE and att["contentUrl"] is None
    card = att["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.2"
    assert card["body"][0]["text"] == "🔴 CRITICAL — well_1/casing_pressure HIHI"
    facts = {f["title"]: f["value"] for f in card["body"][-1]["facts"]}
    assert facts["Value"] == "1482 psi (limit 1450 psi)"
    assert facts["State"] == "UNACK_ACTIVE" and facts["Site"] == "well_1"
    assert facts["Since"] == "2026-01-01 00:00:00 UTC"
    assert facts["Event"] == "evt-0000000000000001 #3"
    assert card["actions"] == [{"type": "Action.OpenUrl", "title": "Acknowledge", "url": url}]


def test_resolved_card_is_green_without_ack_button() -> None:
    card = alarm_card(intent(kind=IntentKind.RESOLVE, reason="resolved", state=AlarmState.NORMAL))
    assert card["body"][0]["color"] == "Good" and card["body"][0]["text"].startswith("✅ RESOLVED")
    assert "actions" not in card


def test_s48_three_hundred_alarms_truncated_below_25kb_with_and_n_more() -> None:
    links = AckLinks(KEY, "https://wellos.example/api")
    items = [intent(n, tag=f"well_{n}/casing_pressure_ünïcödé_🛢️") for n in range(300)]
    urls = {i.dedup_key: links.url("acme", i.alarm_id, i.event_id, T0) for i in items}
    body, shown = render_group(items, title="300 alarms — pad 7 🛢️", ack_urls=urls)
    assert len(body) <= 25_000 < len(encode(envelope({"x": [i.to_dict() for i in items]})))
    assert 0 < shown < 300
    card = json.loads(body)["attachments"][0]["content"]
    assert card["version"] == "1.2"
    assert card["body"][-1]["text"] == f"… and {300 - shown} more"
    # UTF-8 bytes, not characters: the same card with ASCII tags fits more alarms
    ascii_body, ascii_shown = render_group([intent(n) for n in range(300)], title="t", ack_urls={})
    assert ascii_shown > shown and len(ascii_body) <= 25_000


def test_payload_too_large_and_flood_card() -> None:
    with pytest.raises(PayloadTooLarge):
        render_alarm(intent(), max_bytes=500)
    s = FloodSummary("acme", T0, T0 + 60_000_000, True, 37, 120, {"high": 100, "medium": 20},
                     tuple((f"well_{k}/flow", 10 - k) for k in range(10)), 2)
    card = json.loads(render_flood(s))["attachments"][0]["content"]
    assert "ALARM FLOOD" in card["body"][0]["text"]
    facts = {f["title"]: f["value"] for f in card["body"][2]["facts"]}
    assert facts["Notifications summarised"] == "120" and facts["Summary"] == f"flood-acme-{T0} #2"


def test_ack_link_round_trip_tamper_and_expiry() -> None:
    links = AckLinks(KEY, "https://wellos.example/api/", ttl_s=3600)
    url = links.url("acme", "cp@well_1/casing pressure", "evt-1", T0)
    parts = urlsplit(url)
    assert parts.path == "/api/v1/alarms/ack"
    q = dict(parse_qsl(parts.query))
    claims = links.verify_query(q, T0 + 10_000_000)
    assert (claims.tenant, claims.alarm_id, claims.event_id) == ("acme", "cp@well_1/casing pressure", "evt-1")
    for key, value in (("t", "other"), ("a", "cp@well_2/casing pressure"), ("e", "evt-2"),
                       ("x", str(int(q["x"]) + 3600)), ("s", q["s"][:-1] + ("A" if q["s"][-1] != "A" else "B"))):
        with pytest.raises(LinkInvalid):
            links.verify_query({**q, key: value}, T0)
    with pytest.raises(LinkExpired):
        links.verify_query(q, T0 + 3601 * 1_000_000)
    with pytest.raises(LinkInvalid):
        AckLinks("another-key-of-32-bytes-length!!", "https://x").verify_query(q, T0)
    with pytest.raises(LinkInvalid):
        links.verify_query({"t": "acme"}, T0)
    with pytest.raises(LinkInvalid):
        links.verify("acme", "a", "e", "soon", "sig", T0)
    assert KEY not in repr(links)
    with pytest.raises(ValueError):
        AckLinks("short", "https://x")


def test_ack_link_fields_cannot_be_shifted_between_components() -> None:
    links = AckLinks(KEY, "https://x")
    assert links.sign("ab", "c", "e", 1) != links.sign("a", "bc", "e", 1)


def test_token_bucket_and_window() -> None:
    b = TokenBucket(1.0)
    assert b.delay(0.0) == 0.0
    b.take(0.0)
    assert b.delay(0.0) == pytest.approx(1.0) and b.delay(0.5) == pytest.approx(0.5)
    w = SlidingWindow(2, 30.0)
    w.take(0.0)
    w.take(1.0)
    assert w.delay(2.0) == pytest.approx(28.0) and w.delay(30.0) == 0.0


def test_s47_webhook_limiter_budget_under_burst() -> None:
    lim = WebhookLimiter(rate_per_s=4.0, max_per_30s=60)
    now, sends = 0.0, []
    for _ in range(200):  # everything arrives at once; each send happens after its reserved wait
        now += lim.reserve(now)
        sends.append(now)
    for k in range(len(sends)):
        assert sum(1 for t in sends[k:] if t < sends[k] + 1.0) <= 4
        assert sum(1 for t in sends[k:] if t < sends[k] + 30.0) <= 60
    default = WebhookLimiter()
    waits = [default.reserve(0.0) for _ in range(3)]
    assert waits == pytest.approx([0.0, 1.0, 2.0])
