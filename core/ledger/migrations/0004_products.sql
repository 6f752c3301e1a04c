-- Products: a design made print-ready for one product type (files are the making run's files).
CREATE TABLE products (
    id          TEXT    PRIMARY KEY,
    type        TEXT    NOT NULL,
    title       TEXT    NOT NULL,
    description TEXT    NOT NULL DEFAULT '',
    price_cents INTEGER NOT NULL,
    design      TEXT    NOT NULL,
    colours     TEXT    NOT NULL,
    sizes       TEXT    NOT NULL,
    files       TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    run_id      TEXT    NOT NULL,
    created_at  REAL    NOT NULL,
    updated_at  REAL    NOT NULL
);
CREATE INDEX products_by_created ON products (created_at);
CREATE INDEX products_by_run ON products (run_id);

-- Where a product is listed: one row per platform, written before the platform is called
-- (status creating) and with the platform's id the moment it exists.
CREATE TABLE listings (
    product_id  TEXT    NOT NULL REFERENCES products(id) ON DELETE CASCADE,
    platform    TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    external_id TEXT,
    url         TEXT,
    error       TEXT,
    updated_at  REAL    NOT NULL,
    PRIMARY KEY (product_id, platform)
)
