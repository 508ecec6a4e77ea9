-- Every statement that adds outbox rows wakes the relay (channel `outbox_<schema>`, the
-- name the relay LISTENs on), without a second round trip from the writer. Postgres sends
-- one notification per channel and transaction, at commit.
CREATE FUNCTION notify_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox_' || TG_TABLE_SCHEMA, '');
    RETURN NULL;
END
$$;

CREATE TRIGGER outbox_inserted
    AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION notify_outbox();
