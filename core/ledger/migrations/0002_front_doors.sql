-- What a front door asked for beyond the engine's inputs (a contract's own request fields), as JSON.
ALTER TABLE runs ADD COLUMN meta TEXT;
-- Runs a cleanup may remove: finished top-level runs by age.
CREATE INDEX runs_by_finished ON runs (finished_at) WHERE parent_id IS NULL;
-- Small documents a front door keeps (e.g. the desktop contract's settings), one JSON value per key.
CREATE TABLE documents (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at REAL NOT NULL
);
