-- When a timer was set: for a reply timeout, when its command was sent, so the time a
-- participant took to answer can be measured.
ALTER TABLE timers ADD COLUMN armed_at timestamptz NOT NULL DEFAULT now();
