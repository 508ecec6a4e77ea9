-- The admin API lists sagas newest first with a keyset cursor on (created_at, id).
CREATE INDEX sagas_created_id ON sagas (created_at DESC, id DESC);
