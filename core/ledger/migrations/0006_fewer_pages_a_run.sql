-- Fewer pages written for each run. A commit appends every page it changed to the WAL, and those
-- pages, not the statements, were most of a run's ledger cost (~5 us each on tmpfs, ~19 a run).
--
-- Finished runs by age: only runs that have finished. Every run used to enter it when it was
-- queued (finished_at NULL) and move within it when it finished; now it enters it once, when
-- it finishes. The purge's query (`finished_at < ?`) implies `finished_at IS NOT NULL`, so it
-- can use this index as it could the old one.
DROP INDEX runs_by_finished;
CREATE INDEX runs_by_finished ON runs (finished_at) WHERE parent_id IS NULL AND finished_at IS NOT NULL;

-- A run's files and its log lines are read by run only: each is now one b-tree keyed by run
-- (WITHOUT ROWID) instead of a table plus an index on its run, so writing a row changes one
-- page instead of two. A log line's `id` now counts within its run (its order there); the ids
-- of lines already written are kept, so each run's lines stay in the order they were written.
ALTER TABLE artifacts RENAME TO artifacts_0005;
CREATE TABLE artifacts (
    run_id      TEXT    NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    filename    TEXT    NOT NULL,
    media_type  TEXT    NOT NULL,
    size        INTEGER NOT NULL,
    sha256      TEXT    NOT NULL,
    storage_key TEXT    NOT NULL,
    width       INTEGER,
    height      INTEGER,
    PRIMARY KEY (run_id, filename)
) WITHOUT ROWID;
INSERT INTO artifacts SELECT run_id, filename, media_type, size, sha256, storage_key, width, height
FROM artifacts_0005;
DROP TABLE artifacts_0005;

ALTER TABLE run_logs RENAME TO run_logs_0005;
CREATE TABLE run_logs (
    run_id  TEXT    NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    id      INTEGER NOT NULL,
    at      REAL    NOT NULL,
    level   TEXT    NOT NULL,
    message TEXT    NOT NULL,
    PRIMARY KEY (run_id, id)
) WITHOUT ROWID;
INSERT INTO run_logs (run_id, id, at, level, message) SELECT run_id, id, at, level, message FROM run_logs_0005;
DROP TABLE run_logs_0005;
