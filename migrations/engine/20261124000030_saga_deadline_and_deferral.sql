-- Two more timer kinds: `deferred` (a forward command held back by its participant's
-- circuit breaker; firing sends the same attempt) and `deadline` (the saga's deadline;
-- firing compensates a saga still running forward). The deadline timer belongs to the saga,
-- not to a step: it is stored with the step '' (no step is named so) and no phase.
ALTER TABLE timers DROP CONSTRAINT timers_kind_known;
ALTER TABLE timers ADD CONSTRAINT timers_kind_known
    CHECK (kind IN ('timeout', 'backoff', 'deferred', 'deadline'));
ALTER TABLE timers ALTER COLUMN phase DROP NOT NULL;
ALTER TABLE timers ADD CONSTRAINT timers_phase_unless_deadline
    CHECK ((kind = 'deadline') = (phase IS NULL));
