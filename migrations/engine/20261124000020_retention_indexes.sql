-- Retention deletes expired rows in small batches by age; these indexes let each batch
-- find its rows without scanning the table. Ended sagas are found through
-- `sagas_status_updated`, their events and timers by primary key, set-aside outbox rows
-- through `outbox_set_aside_at`.
CREATE INDEX IF NOT EXISTS inbox_received_at ON inbox (received_at);
CREATE INDEX IF NOT EXISTS dead_letters_dead_lettered_at ON dead_letters (dead_lettered_at);
