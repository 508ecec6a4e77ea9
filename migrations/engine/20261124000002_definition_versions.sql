-- The fingerprint of each definition version's steps (names, kinds, participants,
-- phases, order, mode), stored by the first process that registers the version. A later
-- process whose binary has other steps under the same name and version refuses to start.
CREATE TABLE definition_versions (
    name          text        NOT NULL,
    version       integer     NOT NULL,
    fingerprint   text        NOT NULL,
    registered_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, version)
);

-- Start-up asks which definition versions still have sagas that are not over.
CREATE INDEX sagas_unfinished_versions ON sagas (definition, definition_version)
    WHERE status NOT IN ('completed', 'compensated', 'resolved_manually');
