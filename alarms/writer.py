"""The bounded, ordered buffer of state-machine outcomes waiting for the tenant database.

Every outcome (journal rows + notification intents) is appended in the order it happened; the alarms whose
``alarm_state`` row must be rewritten are kept as a set (their *current* record is written, which already
reflects every buffered outcome). A flush takes everything at once and writes it in **one transaction**
(:func:`alarms.store.write`); on failure it is put back in front, so transitions reach the journal in order
however long the database is down.

The buffer is bounded in journal events (``max_events``): beyond it the oldest events and intents are
dropped and counted (``ingestd_alarm_write_buffer_dropped_total``) — the current state rows are never
dropped, so after the outage every alarm still has its exact state; only the history has a gap.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from .model import JournalEvent, NotificationIntent, Outcome

__all__ = ["Pending", "WriteBuffer"]


@dataclass
class Pending:
    events: list[JournalEvent] = field(default_factory=list)
    intents: list[NotificationIntent] = field(default_factory=list)
    dirty: set[str] = field(default_factory=set)
    seq: int = 0
    """Buffer sequence number of the last outcome included (for "wait until written")."""

    def __bool__(self) -> bool:
        return bool(self.events or self.intents or self.dirty)


class WriteBuffer:
    def __init__(self, max_events: int = 100_000, *, on_drop: Callable[[int], None] | None = None) -> None:
        self.max_events = max_events
        self._entries: deque[tuple[tuple[JournalEvent, ...], tuple[NotificationIntent, ...]]] = deque()
        self._dirty: set[str] = set()
        self._events = 0
        self.seq = 0
        """Incremented by every :meth:`add` / :meth:`touch`."""
        self.written = 0
        """``seq`` of the last committed flush."""
        self.dropped = 0
        self._on_drop = on_drop

    def __len__(self) -> int:
        return self._events

    @property
    def empty(self) -> bool:
        return not self._entries and not self._dirty

    @property
    def has_events(self) -> bool:
        """Journal rows or intents are waiting (not just state rows)."""
        return bool(self._entries)

    def add(self, alarm_id: str, out: Outcome) -> int:
        self._entries.append((out.events, out.intents))
        self._events += len(out.events)
        self._dirty.add(alarm_id)
        self.seq += 1
        while self._events > self.max_events and len(self._entries) > 1:
            events, _ = self._entries.popleft()
            self._events -= len(events)
            self.dropped += len(events)
            if self._on_drop is not None:
                self._on_drop(len(events))
        return self.seq

    def touch(self, alarm_id: str) -> None:
        """Only the state row (evaluator snapshot, timers) changed."""
        self._dirty.add(alarm_id)
        self.seq += 1

    def intents(self) -> list[NotificationIntent]:
        return [i for _, intents in self._entries for i in intents]

    def take(self) -> Pending:
        p = Pending(seq=self.seq)
        for events, intents in self._entries:
            p.events.extend(events)
            p.intents.extend(intents)
        p.dirty = self._dirty
        self._entries = deque()
        self._dirty = set()
        self._events = 0
        return p

    def put_back(self, p: Pending) -> None:
        """A failed flush: its content goes back in front of anything added meanwhile."""
        if p.events or p.intents:
            self._entries.appendleft((tuple(p.events), tuple(p.intents)))
            self._events += len(p.events)
        self._dirty |= p.dirty

    def committed(self, p: Pending) -> None:
        self.written = max(self.written, p.seq)
