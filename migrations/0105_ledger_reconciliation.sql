-- Blnk's reconciliation: external records (a CSV upload, or a list sent inline) matched against
-- the ledger's applied transactions by matching rules, in the background.
--
-- Each run copies the rules it uses (`rules`), so editing a rule later does not change what a
-- finished run meant. Progress (processed records, matched and unmatched counts) is written as
-- the run goes, and each match is a row. A match row carries its run's strategy so that the
-- partial unique indexes can prove the strategy's shape: one_to_one uses each external record
-- and each ledger transaction at most once, one_to_many each ledger transaction at most once,
-- many_to_one each external record at most once.

CREATE TABLE ledger.reconciliation_uploads (
    upload_id     TEXT COLLATE "C" PRIMARY KEY CHECK (upload_id ~ '^(upload|instant)_[0-9a-f-]{36}$'),
    source        TEXT NOT NULL DEFAULT '' CHECK (length(source) <= 255),
    file_name     TEXT NOT NULL DEFAULT '' CHECK (length(file_name) <= 255),
    record_count  INTEGER NOT NULL CHECK (record_count BETWEEN 0 AND 100000),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE ledger.external_transactions (
    upload_id    TEXT COLLATE "C" NOT NULL
                 REFERENCES ledger.reconciliation_uploads (upload_id) ON DELETE CASCADE,
    position     INTEGER NOT NULL CHECK (position >= 0),
    external_id  TEXT COLLATE "C" NOT NULL CHECK (length(external_id) BETWEEN 1 AND 255),
    -- Major units exactly as the bank statement wrote them (a decimal, not minor units: the
    -- statement does not say the ledger's precision).
    amount       NUMERIC NOT NULL,
    reference    TEXT NOT NULL DEFAULT '' CHECK (length(reference) <= 255),
    currency     TEXT NOT NULL DEFAULT '' CHECK (length(currency) <= 32),
    description  TEXT NOT NULL DEFAULT '' CHECK (length(description) <= 4096),
    occurred_at  TIMESTAMPTZ,
    source       TEXT NOT NULL DEFAULT '' CHECK (length(source) <= 255),
    PRIMARY KEY (upload_id, position),
    CONSTRAINT external_transactions_id_once_per_upload UNIQUE (upload_id, external_id)
);

CREATE TABLE ledger.matching_rules (
    rule_id      TEXT COLLATE "C" PRIMARY KEY CHECK (rule_id ~ '^rule_[0-9a-f-]{36}$'),
    name         TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 255),
    description  TEXT NOT NULL DEFAULT '' CHECK (length(description) <= 4096),
    criteria     JSONB NOT NULL
                 CHECK (jsonb_typeof(criteria) = 'array' AND jsonb_array_length(criteria) BETWEEN 1 AND 20),
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    CONSTRAINT matching_rules_updated_after_creation CHECK (updated_at >= created_at)
);

CREATE TABLE ledger.reconciliations (
    reconciliation_id        TEXT COLLATE "C" PRIMARY KEY
                             CHECK (reconciliation_id ~ '^recon_[0-9a-f-]{36}$'),
    upload_id                TEXT COLLATE "C" NOT NULL
                             REFERENCES ledger.reconciliation_uploads (upload_id),
    strategy                 TEXT NOT NULL
                             CHECK (strategy IN ('one_to_one', 'one_to_many', 'many_to_one')),
    grouping_criteria        TEXT NOT NULL DEFAULT '' CHECK (length(grouping_criteria) <= 64),
    matching_rule_ids        TEXT[] NOT NULL CHECK (cardinality(matching_rule_ids) BETWEEN 1 AND 20),
    rules                    JSONB NOT NULL CHECK (jsonb_typeof(rules) = 'array'),
    is_dry_run               BOOLEAN NOT NULL,
    status                   TEXT NOT NULL
                             CHECK (status IN ('started', 'in_progress', 'completed', 'failed')),
    processed_count          INTEGER NOT NULL DEFAULT 0 CHECK (processed_count >= 0),
    matched_transactions     INTEGER NOT NULL DEFAULT 0 CHECK (matched_transactions >= 0),
    unmatched_transactions   INTEGER NOT NULL DEFAULT 0 CHECK (unmatched_transactions >= 0),
    error                    TEXT CHECK (length(error) <= 1024),
    started_at               TIMESTAMPTZ NOT NULL,
    updated_at               TIMESTAMPTZ NOT NULL,
    completed_at             TIMESTAMPTZ,
    CONSTRAINT reconciliations_completed_at_iff_finished
        CHECK ((status IN ('completed', 'failed')) = (completed_at IS NOT NULL)),
    CONSTRAINT reconciliations_completed_after_start
        CHECK (completed_at IS NULL OR completed_at >= started_at),
    -- Counts are of external records: each one decided is matched or unmatched.
    CONSTRAINT reconciliations_every_record_decided_once
        CHECK (matched_transactions + unmatched_transactions = processed_count),
    CONSTRAINT reconciliations_failure_has_a_reason
        CHECK ((status = 'failed') = (error IS NOT NULL))
);

CREATE INDEX reconciliations_upload ON ledger.reconciliations (upload_id);

CREATE TABLE ledger.reconciliation_matches (
    reconciliation_id        TEXT COLLATE "C" NOT NULL
                             REFERENCES ledger.reconciliations (reconciliation_id) ON DELETE CASCADE,
    strategy                 TEXT NOT NULL
                             CHECK (strategy IN ('one_to_one', 'one_to_many', 'many_to_one')),
    external_id              TEXT COLLATE "C" NOT NULL CHECK (length(external_id) BETWEEN 1 AND 255),
    internal_transaction_id  TEXT COLLATE "C" NOT NULL
                             CHECK (internal_transaction_id ~ '^txn_[0-9a-f-]{36}$'),
    amount                   NUMERIC NOT NULL,
    matched_at               TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (reconciliation_id, external_id, internal_transaction_id)
);

CREATE UNIQUE INDEX reconciliation_matches_external_once
    ON ledger.reconciliation_matches (reconciliation_id, external_id)
    WHERE strategy IN ('one_to_one', 'many_to_one');
CREATE UNIQUE INDEX reconciliation_matches_internal_once
    ON ledger.reconciliation_matches (reconciliation_id, internal_transaction_id)
    WHERE strategy IN ('one_to_one', 'one_to_many');
CREATE INDEX reconciliation_matches_internal
    ON ledger.reconciliation_matches (internal_transaction_id);

-- A match row's strategy is its run's: checked on insert, so the indexes above hold the run's
-- real shape.
CREATE FUNCTION ledger.check_match_strategy() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM new_rows m
          JOIN ledger.reconciliations r USING (reconciliation_id)
         WHERE r.strategy <> m.strategy OR r.is_dry_run
    ) THEN
        RAISE EXCEPTION 'a match must carry its run''s strategy, and a dry run records none'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER reconciliation_matches_strategy
    AFTER INSERT ON ledger.reconciliation_matches
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.check_match_strategy();

GRANT SELECT, INSERT, UPDATE ON ledger.reconciliation_uploads, ledger.external_transactions,
    ledger.reconciliations, ledger.reconciliation_matches TO dwaybank_service;
GRANT SELECT, INSERT, UPDATE, DELETE ON ledger.matching_rules TO dwaybank_service;
