-- A transaction that wakes the relays itself (a consumer lane, after its commit) sets
-- `saga.outbox_notify` to `off`: NOTIFY serializes the commits that send it (one lock of
-- the whole cluster, held until the commit is on disk). Everyone else still notifies.
CREATE OR REPLACE FUNCTION notify_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('saga.outbox_notify', true), '') <> 'off' THEN
        PERFORM pg_notify('outbox_' || TG_TABLE_SCHEMA, '');
    END IF;
    RETURN NULL;
END
$$;
