-- An operator may end a parked saga by hand: status `resolved_manually`.
ALTER TABLE sagas DROP CONSTRAINT sagas_status_known;
ALTER TABLE sagas ADD CONSTRAINT sagas_status_known
    CHECK (status IN ('running', 'compensating', 'completed', 'compensated', 'parked',
                      'resolved_manually'));
