-- SHA-256 (hex) of the canonical JSON of the trigger that started each saga: a later
-- trigger with the same idempotency key and the same hash is a redelivery; with another
-- hash it reuses the key for different content and is refused. NULL for sagas started
-- before this column existed (the engine hashes their `input` instead).
ALTER TABLE sagas ADD COLUMN payload_hash text;
