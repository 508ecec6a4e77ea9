-- Stored names of Rust enums: each column accepts exactly the names its enum writes
-- (SagaStatus, TimerKind, Phase); the Rust side converts in one place.

ALTER TABLE sagas ADD CONSTRAINT sagas_status_known
    CHECK (status IN ('running', 'compensating', 'completed', 'compensated', 'parked'));

-- A step's timer is either a reply timeout or a retry backoff.
UPDATE timers SET kind = 'timeout' WHERE kind = 'step';
ALTER TABLE timers ADD CONSTRAINT timers_kind_known CHECK (kind IN ('timeout', 'backoff'));
ALTER TABLE timers ADD CONSTRAINT timers_phase_known
    CHECK (phase IN ('try', 'confirm', 'cancel', 'action', 'compensate'));
