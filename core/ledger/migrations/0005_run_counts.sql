-- Lists and counts that cost the same at 100,000 runs as at 100.
--
-- run_counts: how many runs there are of each kind, status and top-levelness, kept by the
-- triggers below in the same transaction as every insert, status change and delete of a run
-- (a batch's children deleted by the cascade included), so a count is a sum of a few rows.
-- A run is top-level when it is neither a batch's child nor a part of a products run (whose
-- idempotency keys start `pod:`); the same test is in core/ledger/sqlite_queries.py (`TOP_LEVEL`).
CREATE TABLE run_counts (
    kind      TEXT    NOT NULL,
    status    TEXT    NOT NULL,
    top_level INTEGER NOT NULL,
    n         INTEGER NOT NULL,
    PRIMARY KEY (kind, status, top_level)
) WITHOUT ROWID;

INSERT INTO run_counts (kind, status, top_level, n)
SELECT kind, status,
       parent_id IS NULL AND (idempotency_key IS NULL OR substr(idempotency_key, 1, 4) != 'pod:'),
       COUNT(*)
FROM runs GROUP BY 1, 2, 3;

CREATE TRIGGER run_counts_after_insert AFTER INSERT ON runs BEGIN
    INSERT INTO run_counts (kind, status, top_level, n)
    VALUES (
        NEW.kind, NEW.status,
        NEW.parent_id IS NULL AND (NEW.idempotency_key IS NULL OR substr(NEW.idempotency_key, 1, 4) != 'pod:'),
        1
    )
    ON CONFLICT (kind, status, top_level) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER run_counts_after_update AFTER UPDATE OF kind, status, parent_id, idempotency_key ON runs
WHEN NEW.kind IS NOT OLD.kind OR NEW.status IS NOT OLD.status OR NEW.parent_id IS NOT OLD.parent_id
    OR NEW.idempotency_key IS NOT OLD.idempotency_key
BEGIN
    UPDATE run_counts SET n = n - 1
    WHERE kind = OLD.kind AND status = OLD.status
      AND top_level = (OLD.parent_id IS NULL
          AND (OLD.idempotency_key IS NULL OR substr(OLD.idempotency_key, 1, 4) != 'pod:'));
    INSERT INTO run_counts (kind, status, top_level, n)
    VALUES (
        NEW.kind, NEW.status,
        NEW.parent_id IS NULL AND (NEW.idempotency_key IS NULL OR substr(NEW.idempotency_key, 1, 4) != 'pod:'),
        1
    )
    ON CONFLICT (kind, status, top_level) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER run_counts_after_delete AFTER DELETE ON runs BEGIN
    UPDATE run_counts SET n = n - 1
    WHERE kind = OLD.kind AND status = OLD.status
      AND top_level = (OLD.parent_id IS NULL
          AND (OLD.idempotency_key IS NULL OR substr(OLD.idempotency_key, 1, 4) != 'pod:'));
END;

-- Filtered lists, newest first: one range of (status, kind, seq) per status and kind asked for,
-- merged (see `sqlite_queries.page_query`). The partial index holds only the top-level runs, for the lists
-- that leave out batch children and products runs' parts. They replace the two single-column
-- indexes, whose ranges had to be read whole and sorted when the other filter was also given.
-- (Carrying the run's times in the partial index would let an average job time be read from
-- it alone, but costs every run's transitions more than it saves the metrics, which reuse
-- their answer until the ledger changes.)
DROP INDEX runs_by_status;
DROP INDEX runs_by_kind;
CREATE INDEX runs_by_status_kind ON runs (status, kind, seq);
CREATE INDEX runs_top_level ON runs (status, kind, seq)
WHERE parent_id IS NULL AND (idempotency_key IS NULL OR substr(idempotency_key, 1, 4) != 'pod:');
