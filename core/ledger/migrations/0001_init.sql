-- The run ledger: one row per run, its files, and its log. Source of truth for every front door.
CREATE TABLE runs (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT    NOT NULL UNIQUE,
    kind            TEXT    NOT NULL,
    parent_id       TEXT    REFERENCES runs(id) ON DELETE CASCADE,
    status          TEXT    NOT NULL,
    priority        TEXT    NOT NULL,
    progress        REAL    NOT NULL DEFAULT 0,
    step            INTEGER NOT NULL DEFAULT 0,
    max_steps       INTEGER NOT NULL DEFAULT 0,
    message         TEXT    NOT NULL DEFAULT '',
    inputs          TEXT    NOT NULL,
    result          TEXT,
    error           TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER NOT NULL DEFAULT 3,
    timeout_s       REAL,
    idempotency_key TEXT    UNIQUE,
    backend         TEXT    NOT NULL,
    backend_handle  TEXT,
    created_at      REAL    NOT NULL,
    started_at      REAL,
    finished_at     REAL
);
CREATE INDEX runs_by_status ON runs (status, seq);
CREATE INDEX runs_by_kind ON runs (kind, seq);
CREATE INDEX runs_by_parent ON runs (parent_id, seq);

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
);

CREATE TABLE run_logs (
    id      INTEGER PRIMARY KEY,
    run_id  TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    at      REAL NOT NULL,
    level   TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX run_logs_by_run ON run_logs (run_id, id);
