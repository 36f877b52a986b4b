-- Search reads the ledger's tables directly (there is no Typesense index to rebuild), so a
-- reindex does no work; it is still recorded, so that `GET /search/reindex` answers the same on
-- every replica and says truthfully that the last run completed and what it covered.

CREATE TABLE ledger.search_reindex_runs (
    run_id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    status             TEXT NOT NULL CHECK (status IN ('in_progress', 'completed', 'failed')),
    phase              TEXT NOT NULL CHECK (length(phase) BETWEEN 1 AND 64),
    batch_size         INTEGER NOT NULL CHECK (batch_size BETWEEN 1 AND 10000),
    total_records      BIGINT NOT NULL CHECK (total_records >= 0),
    processed_records  BIGINT NOT NULL CHECK (processed_records BETWEEN 0 AND total_records),
    started_at         TIMESTAMPTZ NOT NULL,
    completed_at       TIMESTAMPTZ,
    CONSTRAINT search_reindex_runs_completed_at_iff_done
        CHECK ((status = 'in_progress') = (completed_at IS NULL)),
    CONSTRAINT search_reindex_runs_completed_after_start
        CHECK (completed_at IS NULL OR completed_at >= started_at)
);

GRANT SELECT, INSERT, UPDATE ON ledger.search_reindex_runs TO dwaybank_service;
