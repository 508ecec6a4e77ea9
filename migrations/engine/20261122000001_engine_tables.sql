-- Engine tables: event store, projection, inbox, outbox, timers.

-- Append-only saga history; the primary key is the optimistic lock.
CREATE TABLE saga_events (
    saga_id     uuid        NOT NULL,
    seq         bigint      NOT NULL CHECK (seq > 0),
    event_type  text        NOT NULL,
    data        jsonb       NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (saga_id, seq)
);

-- Query projection of each saga, kept in the same transaction as its events.
CREATE TABLE sagas (
    id                 uuid        PRIMARY KEY,
    definition         text        NOT NULL,
    definition_version integer     NOT NULL,
    status             text        NOT NULL,
    step               text,
    input              jsonb       NOT NULL,
    state              jsonb       NOT NULL,
    version            bigint      NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    next_wakeup_at     timestamptz,
    parked_reason      text
);
CREATE INDEX sagas_status_updated ON sagas (status, updated_at DESC, id);
CREATE INDEX sagas_definition ON sagas (definition, created_at DESC, id);

-- Consumed-message deduplication, per consumer.
CREATE TABLE inbox (
    consumer    text        NOT NULL,
    message_id  uuid        NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);

-- Messages waiting for the relay; a row leaves once Kafka acknowledged it.
CREATE TABLE outbox (
    id         bigserial   PRIMARY KEY,
    topic      text        NOT NULL,
    key        text        NOT NULL,
    payload    jsonb       NOT NULL,
    headers    jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_key_id ON outbox (key, id);

-- Durable wake-ups: one per step at most (a step's timeout, or its retry backoff).
CREATE TABLE timers (
    saga_id uuid        NOT NULL,
    step    text        NOT NULL,
    kind    text        NOT NULL,
    phase   text        NOT NULL,
    attempt integer     NOT NULL,
    fire_at timestamptz NOT NULL,
    PRIMARY KEY (saga_id, step)
);
CREATE INDEX timers_fire_at ON timers (fire_at);
