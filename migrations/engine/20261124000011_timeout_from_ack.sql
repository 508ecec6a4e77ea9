-- A reply timeout starts when the broker acknowledged its command, not when the command
-- was written to the outbox: relay lag or a broker outage must not turn into timeouts.
-- Until then the timer has no `fire_at`, only the `wait` to add to the acknowledgement.
ALTER TABLE timers ALTER COLUMN fire_at DROP NOT NULL;
ALTER TABLE timers ADD COLUMN wait interval;
ALTER TABLE timers ADD CONSTRAINT timers_fire_at_or_wait CHECK (fire_at IS NOT NULL OR wait IS NOT NULL);

-- The relay deletes a row once the broker acknowledged it (or set it aside for good);
-- that moment, on the database's clock, starts the timeout of the command it carried.
CREATE FUNCTION start_reply_timeouts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH started AS (
        UPDATE timers t
        SET fire_at = clock_timestamp() + t.wait, armed_at = clock_timestamp(), wait = NULL
        FROM published p
        WHERE t.wait IS NOT NULL
          AND t.kind = 'timeout'
          AND p.payload ? 'step'
          AND t.saga_id = (p.payload->>'saga_id')::uuid
          AND t.step = p.payload->>'step'
          AND t.phase = p.payload->>'phase'
          AND t.attempt = (p.payload->>'attempt')::integer
        RETURNING t.saga_id
    )
    UPDATE sagas s
    SET next_wakeup_at = (SELECT min(fire_at) FROM timers WHERE saga_id = s.id)
    WHERE s.id IN (SELECT saga_id FROM started);
    RETURN NULL;
END
$$;

CREATE TRIGGER outbox_published
    AFTER DELETE ON outbox
    REFERENCING OLD TABLE AS published
    FOR EACH STATEMENT EXECUTE FUNCTION start_reply_timeouts();
