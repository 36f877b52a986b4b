-- A reconciliation runs on the replica that started it. Its runner now beats on every run it
-- holds (queued or running) every 30 s; a run in `started` or `in_progress` whose heartbeat is
-- older than three minutes lost its replica (a restart, a crash) and is marked failed by the
-- scheduler actor, instead of staying `in_progress` for ever. Rows that exist now start beating
-- from this migration: if nothing holds them they are failed three minutes later.

ALTER TABLE ledger.reconciliations ADD COLUMN heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT now();

CREATE INDEX reconciliations_unfinished_heartbeat ON ledger.reconciliations (heartbeat_at)
    WHERE status IN ('started', 'in_progress');
