-- A dead letter the DLQ topic would not take (after bounded attempts) is kept here only:
-- `published_at` stays empty and `publish_error` says why.
ALTER TABLE dead_letters
    ADD COLUMN published_at  timestamptz,
    ADD COLUMN publish_error text;
UPDATE dead_letters SET published_at = dead_lettered_at;

-- Outbox rows the broker refused for good (too large, invalid), set aside with the error
-- so they no longer hold up the rows behind them.
CREATE TABLE outbox_set_aside (
    id          bigint      PRIMARY KEY,
    topic       text        NOT NULL,
    key         text        NOT NULL,
    payload     jsonb       NOT NULL,
    headers     jsonb       NOT NULL,
    created_at  timestamptz NOT NULL,
    error       text        NOT NULL,
    set_aside_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_set_aside_at ON outbox_set_aside (set_aside_at);
