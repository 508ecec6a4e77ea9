-- Retention deletes expired rows in small batches by age; these indexes let each batch
-- find its rows without scanning the table (set-aside outbox rows use
-- `outbox_set_aside_at`).
CREATE INDEX IF NOT EXISTS barrier_created_at ON barrier (created_at);
CREATE INDEX IF NOT EXISTS dead_letters_dead_lettered_at ON dead_letters (dead_lettered_at);
