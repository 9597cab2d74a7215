-- The replay ledger is keyed by the dead letter's identity (shared/dlq/model.py letter_id), not
-- by its position: a stage killed before committing its input writes the same dead letter again
-- at another position, and that copy must not be replayed a second time.  The position columns
-- stay, as where the replayed copy was read.  Rows from before get the identity the code gives a
-- dead letter without origin headers (its position and timestamp); a runtime-written dead letter
-- replayed before this migration is not recognised by them and may be sent once more, which
-- every stage absorbs (their effects are idempotent on the record id; archived records are
-- skipped anyway).
ALTER TABLE dlq_replays ADD COLUMN letter_id text;
UPDATE dlq_replays
   SET letter_id = 'pos:' || dlq_topic || ':' || dlq_partition || ':' || dlq_offset || ':' || dlq_timestamp_ms;
ALTER TABLE dlq_replays ALTER COLUMN letter_id SET NOT NULL;
ALTER TABLE dlq_replays DROP CONSTRAINT dlq_replays_pkey;
ALTER TABLE dlq_replays ADD PRIMARY KEY (letter_id);
