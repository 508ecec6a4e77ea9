-- A timer whose firing fails is tried again later on its own, with backoff, so it never
-- holds up the timers behind it; operators see how often and why it failed.
ALTER TABLE timers
    ADD COLUMN failures   integer NOT NULL DEFAULT 0,
    ADD COLUMN last_error text;
