"""Turn a :class:`~alarms.dispatch.Delivery` into a card and send it, failing over along the fallback chain.

``deliver()`` renders the card once (the same bytes, event ids and sequence numbers go to every channel),
sends it to the delivery's route and, if that channel fails (rejected, exhausted, invalid), to the route's
``fallback``, then that route's fallback … The report lists the routes that failed: the engine raises (or
keeps active) the ``system@notify:<route>`` alarm for each and clears it when the route succeeds again.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import AlarmsConfig, Route
from ..dispatch import Delivery
from ..links import AckLinks
from ..model import IntentKind
from .cards import PayloadTooLarge, render_alarm, render_flood, render_group
from .teams import RetryPolicy, SendOutcome, SendResult, TeamsNotifier

__all__ = ["DeliveryReport", "deliver", "render_delivery"]

_ACKABLE = (IntentKind.RAISE, IntentKind.REMINDER, IntentKind.ESCALATE, IntentKind.UPDATE)


def render_delivery(d: Delivery, route: Route, *, links: AckLinks | None, now_us: int) -> bytes:
    """Card body for ``d`` within the route's byte budget (Acknowledge links only for unacknowledged alarms)."""
    if d.flood is not None:
        return render_flood(d.flood, max_bytes=route.max_card_bytes)
    urls = {}
    if links is not None and route.ack_links:
        urls = {i.dedup_key: links.url(i.tenant, i.alarm_id, i.event_id, now_us)
                for i in d.intents if i.kind in _ACKABLE and i.state.unacked}
    if len(d.intents) == 1:
        i = d.intents[0]
        return render_alarm(i, ack_url=urls.get(i.dedup_key), max_bytes=route.max_card_bytes)
    site = d.group or d.tenant
    title = f"{len(d.intents)} alarm notifications — {site}"
    body, _ = render_group(d.intents, title=title, ack_urls=urls, max_bytes=route.max_card_bytes)
    return body


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    delivery: Delivery
    attempts: tuple[tuple[str, SendResult], ...]
    """(route name, result) for every channel tried, in order."""
    delivered_via: str | None
    failed_routes: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.delivered_via is not None


async def deliver(d: Delivery, cfg: AlarmsConfig, notifier: TeamsNotifier, *, links: AckLinks | None,
                  now_us: int, max_hops: int = 4) -> DeliveryReport:
    route = cfg.route(d.route)
    if route is None:
        return DeliveryReport(d, (), None, (d.route,))
    attempts: list[tuple[str, SendResult]] = []
    failed: list[str] = []
    seen: set[str] = set()
    cur: Route | None = route
    while cur is not None and cur.name not in seen and len(seen) < max_hops:
        seen.add(cur.name)
        try:
            body = render_delivery(d, cur, links=links, now_us=now_us)
        except PayloadTooLarge as exc:
            res = SendResult(SendOutcome.INVALID, 0, None, str(exc), 0.0, "", d.key)
        else:
            res = await notifier.send(cur.webhook, body, dedup_key=d.key, route=cur.name,
                                      retry=RetryPolicy(timeout_s=cur.timeout, deadline_s=cur.retry_deadline,
                                                        base_s=notifier.retry.base_s, cap_s=notifier.retry.cap_s,
                                                        retry_after_max_s=notifier.retry.retry_after_max_s,
                                                        max_attempts=notifier.retry.max_attempts),
                                      rate=(cur.rate_per_second, cur.max_per_30s))
        attempts.append((cur.name, res))
        if res.ok:
            return DeliveryReport(d, tuple(attempts), cur.name, tuple(failed))
        failed.append(cur.name)
        cur = cfg.route(cur.fallback) if cur.fallback else None
    return DeliveryReport(d, tuple(attempts), None, tuple(failed))
