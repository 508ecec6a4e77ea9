-- Participant kit tables, created in each domain's own schema: barrier, inbox, outbox.

-- One row per (saga, branch, phase) a participant has answered, with the reply it gave.
-- A row for a forward phase written by its undo phase marks a null compensation, so a
-- late forward command (hanging) finds it and is rejected.
CREATE TABLE barrier (
    gid        uuid        NOT NULL,
    branch     text        NOT NULL,
    op         text        NOT NULL,
    reply      jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (gid, branch, op)
);

-- Replies waiting for the relay (same shape as the engine's outbox).
CREATE TABLE outbox (
    id         bigserial   PRIMARY KEY,
    topic      text        NOT NULL,
    key        text        NOT NULL,
    payload    jsonb       NOT NULL,
    headers    jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_key_id ON outbox (key, id);
