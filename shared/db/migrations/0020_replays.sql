-- The dead-letter replay ledger: one row per dead letter replayed (or parked), so replaying the
-- same dead letters again sends nothing twice.  A row is 'claimed' before its message is sent and
-- 'sent' once the broker acknowledged it; a claim never confirmed (the tool died) may be taken
-- over after a while, so a replay is never lost to a crash (a resend is harmless: every stage's
-- effects are idempotent on the record id).
CREATE TABLE dlq_replays (
    dlq_topic        text NOT NULL,
    dlq_partition    integer NOT NULL,
    dlq_offset       bigint NOT NULL,
    -- The local broker's memory storage starts topics again at offset 0 after a restart: the
    -- timestamp and record id tell a new dead letter at a reused position from the one replayed.
    dlq_timestamp_ms bigint NOT NULL,
    record_id        text NOT NULL,
    action           text NOT NULL CHECK (action IN ('replayed', 'parked')),
    target_topic     text NOT NULL,
    replay_count     integer NOT NULL,
    state            text NOT NULL CHECK (state IN ('claimed', 'sent')),
    actor            text NOT NULL,
    claimed_at       timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz,
    PRIMARY KEY (dlq_topic, dlq_partition, dlq_offset)
);
CREATE INDEX dlq_replays_record ON dlq_replays (record_id);
