-- One word per concept across code and tables: a barrier row is keyed by the saga, the
-- step and the phase, as everywhere else; the phase column holds only known phase names.

ALTER TABLE barrier RENAME COLUMN gid TO saga_id;
ALTER TABLE barrier RENAME COLUMN branch TO step;
ALTER TABLE barrier RENAME COLUMN op TO phase;
ALTER TABLE barrier ADD CONSTRAINT barrier_phase_known
    CHECK (phase IN ('try', 'confirm', 'cancel', 'action', 'compensate'));
