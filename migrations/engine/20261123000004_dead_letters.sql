-- Every dead-lettered message is also kept here, where an operator can list, replay or
-- discard it. One row per source position: a redelivered poison message adds nothing.
CREATE TABLE dead_letters (
    id               bigserial   PRIMARY KEY,
    topic            text        NOT NULL,
    partition        integer     NOT NULL,
    "offset"         bigint      NOT NULL,
    key              bytea,
    headers          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    -- The payload, or its first 64 KiB when it was longer (then `truncated`).
    payload          bytea,
    payload_size     integer     NOT NULL,
    truncated        boolean     NOT NULL,
    error            text        NOT NULL,
    dead_lettered_at timestamptz NOT NULL DEFAULT now(),
    discarded_at     timestamptz,
    UNIQUE (topic, partition, "offset")
);

-- What operators did with dead letters, and why.
CREATE TABLE dead_letter_actions (
    id             bigserial   PRIMARY KEY,
    dead_letter_id bigint      NOT NULL REFERENCES dead_letters (id),
    action         text        NOT NULL CHECK (action IN ('replay', 'discard')),
    actor          text        NOT NULL,
    reason         text        NOT NULL,
    at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letter_actions_letter ON dead_letter_actions (dead_letter_id, id);
