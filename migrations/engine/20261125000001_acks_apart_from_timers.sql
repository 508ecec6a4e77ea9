-- The relay no longer touches timers or sagas when the broker acknowledges a command: it
-- records the acknowledgement in a table of its own (insert only), and the timer poller
-- starts the waiting reply timeouts from it, skipping any timer a transition holds at that
-- moment (the acknowledgement stays and is applied on the next poll). So a relay never
-- waits on, or deadlocks with, a consumer's group transaction.
CREATE TABLE command_acks (
    saga_id  uuid        NOT NULL,
    step     text        NOT NULL,
    phase    text        NOT NULL,
    attempt  integer     NOT NULL,
    acked_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (saga_id, step, phase, attempt)
);

CREATE OR REPLACE FUNCTION start_reply_timeouts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO command_acks (saga_id, step, phase, attempt)
    SELECT (p.payload->>'saga_id')::uuid, p.payload->>'step', p.payload->>'phase',
           (p.payload->>'attempt')::integer
    FROM published p
    WHERE p.payload ? 'step' AND p.payload ? 'phase' AND p.payload ? 'attempt'
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;

-- A saga's next wake-up is read from its timers when asked for (the admin API), not
-- rewritten with every transition.
ALTER TABLE sagas DROP COLUMN next_wakeup_at;

-- The due-timer scan reads only timers that have a time.
DROP INDEX timers_fire_at;
CREATE INDEX timers_fire_at ON timers (fire_at) WHERE fire_at IS NOT NULL;
