-- Bulk requests sent with `run_async`, stored before the 202 goes out (Blnk answers before it
-- has anything durable): if the replica that accepted one stops before running it, the
-- scheduler finds it pending past its lease and runs it. The engine marks a request done in
-- the same database transaction as the batch that ran it, and locks the row while it checks,
-- so a request runs once however many times it is submitted.

CREATE TABLE ledger.async_bulks (
    batch_id     TEXT COLLATE "C" PRIMARY KEY CHECK (batch_id ~ '^bulk_[0-9a-f-]{36}$'),
    request      JSONB NOT NULL,                      -- the request body as it was accepted
    status       TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done')),
    attempts     INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    lease_until  TIMESTAMPTZ NOT NULL,                -- nobody else runs it before this time
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at  TIMESTAMPTZ,
    CONSTRAINT async_bulks_done_has_time CHECK ((status = 'done') = (finished_at IS NOT NULL))
);

CREATE INDEX async_bulks_pending ON ledger.async_bulks (lease_until) WHERE status = 'pending';

GRANT SELECT, INSERT, UPDATE ON ledger.async_bulks TO dwaybank_service;
