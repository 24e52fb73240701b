-- Alarm engine (alarms/engine.py, alarms/store.py): current state, append-only journal, notification outbox.
-- Identical on every storage tier (small, row-oriented tables; no hypertables).
--
-- One transaction per write of the engine: alarm_state rows + alarm_journal rows + notification_outbox rows,
-- so a notification is in the outbox iff its transition is in the journal (a restart neither forgets nor
-- re-fires an alarm).

-- Current state of every alarm that ever did something (quiet alarms have no row).
CREATE TABLE IF NOT EXISTS alarm_state (
    alarm_id     text PRIMARY KEY,                       -- "<rule>@<tag>", "<rule>@<source>", "system@<key>"
    rule         text NOT NULL,
    kind         text NOT NULL,                          -- limit, deviation, ..., comm_loss, system
    subject      text NOT NULL,                          -- the alarmed tag (the source for comm loss)
    source       text,                                   -- the source feeding the tag (comm-loss inhibition)
    state        text NOT NULL,                          -- AlarmState, denormalised for readers
    display_state text NOT NULL,
    priority     text,
    event_id     text,                                   -- open episode, NULL when NORMAL
    record       jsonb NOT NULL,                         -- AlarmRecord.to_dict() (absolute times in µs)
    eval_state   jsonb NOT NULL DEFAULT '{}'::jsonb,     -- evaluator snapshot: pending on/off-delay deadlines
    fingerprint  text NOT NULL DEFAULT '',               -- binding fingerprint (hot reload)
    next_due     timestamptz,                            -- earliest timer (on-delay, shelve expiry, reminder, ...)
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS alarm_state_active ON alarm_state (state) WHERE state <> 'NORMAL';

-- Append-only: one row per state-machine event (JournalEvent). Replaying it rebuilds alarm_state.record.
CREATE TABLE IF NOT EXISTS alarm_journal (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alarm_id     text NOT NULL,
    seq          integer NOT NULL,
    at           timestamptz NOT NULL,
    kind         text NOT NULL,
    from_state   text NOT NULL,
    to_state     text NOT NULL,
    event_id     text,
    occurrence   integer NOT NULL,
    priority     text,
    level        text,
    value        double precision,
    "limit"      double precision,
    username     text NOT NULL DEFAULT '',
    comment      text NOT NULL DEFAULT '',
    reason       text NOT NULL DEFAULT '',
    annunciated  boolean NOT NULL DEFAULT false,
    changes      jsonb NOT NULL,
    written_at   timestamptz NOT NULL DEFAULT now(),     -- later than `at` when written after a DB outage
    UNIQUE (alarm_id, seq)                               -- a replayed transaction cannot duplicate rows
);
CREATE INDEX IF NOT EXISTS alarm_journal_at ON alarm_journal (at);
CREATE INDEX IF NOT EXISTS alarm_journal_event ON alarm_journal (event_id);

-- Transactional outbox of notification intents; the sender marks a row sent only after a 2xx.
CREATE TABLE IF NOT EXISTS notification_outbox (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at    timestamptz NOT NULL DEFAULT now(),
    alarm_id      text NOT NULL,
    seq           integer NOT NULL,                      -- journal row that caused it
    dedup_key     text NOT NULL,                         -- "evt-…#seq": shown in the card, idempotency key
    kind          text NOT NULL,                         -- raise, update, resolve, reminder, escalate, chattering
    intent        jsonb NOT NULL,                        -- NotificationIntent.to_dict()
    status        text NOT NULL DEFAULT 'pending',       -- pending | sent | dropped | failed
    delivery_key  text,                                  -- card it went out in (grouped / flood cards)
    route         text,                                  -- route that accepted it (after fail-over)
    attempts      integer NOT NULL DEFAULT 0,
    detail        text NOT NULL DEFAULT '',              -- reason / last HTTP status; never a URL
    sent_at       timestamptz,
    UNIQUE (alarm_id, seq),
    CHECK (status IN ('pending', 'sent', 'dropped', 'failed'))
);
CREATE INDEX IF NOT EXISTS notification_outbox_pending ON notification_outbox (id) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS notification_outbox_dedup ON notification_outbox (dedup_key);
