"""The server-backed ledger: PostgreSQL through psycopg 3's async connections and their pool.

Chosen when `ATELIER_DATABASE_URL` is set, so that several processes on several machines (front
doors, workers) share one ledger. It keeps the embedded ledger's semantics call for call (the
port: `core.ledger.Ledger`; the tests run both adapters): each call is one transaction on a
pooled connection, a run's `seq` comes from an identity column, a reused idempotency key is a
`Conflict`, a guarded update applies only in an expected status, and counts are kept by a
trigger in the transaction that changes a run, so a count is a sum of a few rows.

- `core.ledger.postgres.connections`: the pool (opened on first use, so start-up never waits
  for the server), the schema's migrations under an advisory lock, and errors as callers hear
  them (a server that cannot be reached is `LedgerUnavailable`, its address without password).
- `core.ledger.postgres.ledger`: the runs' operations, with the SQL shared with SQLite where it
  is the same (`core.ledger.sqlite_queries`, `core.ledger.sqlite_rows`).
- `core.ledger.postgres.characters`, `core.ledger.postgres.products`: the other two parts of
  the port, their rows mapped by `core.ledger.records` like SQLite's.

psycopg is imported only here: the embedded default never needs it installed.
"""

from core.ledger.postgres.ledger import PostgresLedger

__all__ = ["PostgresLedger"]
