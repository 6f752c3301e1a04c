-- Characters: a named subject, its training images and the LoRA versions trained from them.
-- name_key is the name case-folded, so names are unique whatever their case.
CREATE TABLE characters (
    id             TEXT    PRIMARY KEY,
    name           TEXT    NOT NULL,
    name_key       TEXT    NOT NULL UNIQUE,
    description    TEXT    NOT NULL DEFAULT '',
    trigger_word   TEXT    NOT NULL UNIQUE,
    active_version INTEGER,
    created_at     REAL    NOT NULL,
    updated_at     REAL    NOT NULL
);

-- A training image's bytes live in the character's folder under their sha256 (content-addressed,
-- so writing one is idempotent and a duplicate is one row refused), its name only here.
CREATE TABLE character_images (
    character_id TEXT    NOT NULL REFERENCES characters(id) ON DELETE CASCADE,
    filename     TEXT    NOT NULL,
    sha256       TEXT    NOT NULL,
    size         INTEGER NOT NULL,
    width        INTEGER NOT NULL,
    height       INTEGER NOT NULL,
    media_type   TEXT    NOT NULL,
    caption      TEXT    NOT NULL DEFAULT '',
    added_at     REAL    NOT NULL,
    PRIMARY KEY (character_id, filename),
    UNIQUE (character_id, sha256)
);

CREATE TABLE lora_versions (
    character_id TEXT    NOT NULL REFERENCES characters(id) ON DELETE CASCADE,
    version      INTEGER NOT NULL,
    filename     TEXT    NOT NULL,
    trainer      TEXT    NOT NULL,
    base_model   TEXT    NOT NULL,
    steps        INTEGER NOT NULL,
    run_id       TEXT    NOT NULL,
    sha256       TEXT    NOT NULL,
    size         INTEGER NOT NULL,
    created_at   REAL    NOT NULL,
    comfyui_name TEXT,
    PRIMARY KEY (character_id, version)
)
