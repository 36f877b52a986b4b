-- Wallet transactions and their monthly-partitioned history (specification section 2.4).
--
-- Deviations from the specification (see 0002 for those shared by every table):
--   * CHECKs every valid row satisfies: amount > 0 (the direction of money is carried by
--     transaction_type, never by the sign) and an upper-case currency code of 3 to 10 letters
--     or digits. Money stays DECIMAL(18,8) as specified.
--   * transactions_archive cannot be `LIKE transactions INCLUDING ALL`: the primary key of a
--     partitioned table must contain its partition key, and transactions' key is id alone. It
--     copies the columns, defaults, NOT NULLs and CHECKs, and its key is (id, created_at). It
--     has no foreign keys: history outlives the wallets it mentions, and a partitioned table
--     referencing users would make every user deletion scan every partition.
--   * Partitions are named transactions_archive_YYYY_MM (the specification's single example
--     was transactions_2025_01), so that every partition sorts and reads as its parent's.
--     Partition bounds are whole months in UTC, whatever the TimeZone of the session that
--     creates them. There is no default partition: a row for a month without a partition is
--     refused rather than hidden in a catch-all that later blocks creating that month.

CREATE TABLE transactions (
    id                      UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id                 UUID REFERENCES users(id),
    wallet_id               UUID REFERENCES connected_wallets(id),
    blnk_transaction_id     UUID,          -- the posting's transaction in the ledger
    external_transaction_id VARCHAR(255),  -- the reference at the external system
    amount                  DECIMAL(18,8) NOT NULL,
    currency                VARCHAR(10) NOT NULL,
    transaction_type        VARCHAR(20) NOT NULL
                            CHECK (transaction_type IN ('spend', 'receive', 'transfer', 'fee',
                                                        'refund')),
    category                VARCHAR(50),
    merchant_name           VARCHAR(255),
    merchant_category       VARCHAR(50),
    description             TEXT,
    status                  VARCHAR(20) DEFAULT 'pending'
                            CHECK (status IN ('pending', 'processing', 'completed', 'failed',
                                              'cancelled')),
    risk_score              INTEGER DEFAULT 0 CHECK (risk_score >= 0 AND risk_score <= 100),
    compliance_status       VARCHAR(20) DEFAULT 'approved'
                            CHECK (compliance_status IN ('approved', 'flagged', 'blocked',
                                                         'under_review')),
    metadata                JSONB DEFAULT '{}',
    created_at              TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at              TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    CONSTRAINT transactions_amount_positive_check CHECK (amount > 0),
    CONSTRAINT transactions_currency_code_check CHECK (currency ~ '^[A-Z0-9]{3,10}$')
);

CREATE INDEX idx_transactions_user_id ON transactions(user_id);
CREATE INDEX idx_transactions_wallet_id ON transactions(wallet_id);
CREATE INDEX idx_transactions_status ON transactions(status);
CREATE INDEX idx_transactions_created_at ON transactions(created_at);
CREATE INDEX idx_transactions_amount ON transactions(amount);

CREATE TABLE transactions_archive (
    LIKE transactions INCLUDING DEFAULTS INCLUDING CONSTRAINTS,
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);

CREATE INDEX idx_transactions_archive_user_created ON transactions_archive(user_id, created_at);
CREATE INDEX idx_transactions_archive_wallet_created
    ON transactions_archive(wallet_id, created_at);

COMMENT ON TABLE transactions_archive IS
    'Settled transactions moved out of transactions, one partition per UTC month '
    '(transactions_archive_YYYY_MM).';

-- Creates the monthly partitions for start_month and the months_ahead months after it, each
-- only if it does not exist yet, and returns how many it created. It is bounded (at most 121
-- partitions per call) and serialised by a transaction-level advisory lock, so concurrent
-- callers neither race on a name nor create a month twice. It runs as its owner so that the
-- scheduler, which holds only the service role, may call it; its arguments reach the DDL only
-- as a formatted date and a %I-quoted name.
CREATE FUNCTION create_transactions_archive_partitions(
    months_ahead integer,
    start_month date DEFAULT date_trunc('month', now() AT TIME ZONE 'UTC')::date
) RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    months_ahead_max CONSTANT integer := 120;
    first_month date;
    month_start date;
    partition_name text;
    created_count integer := 0;
BEGIN
    IF months_ahead IS NULL OR months_ahead < 0 OR months_ahead > months_ahead_max THEN
        RAISE EXCEPTION 'months_ahead must be between 0 and %, got %',
            months_ahead_max, coalesce(months_ahead::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Four-digit years keep every partition name the same shape and in sorting order.
    IF start_month IS NULL OR start_month < DATE '1900-01-01'
            OR start_month >= DATE '9990-01-01' THEN
        RAISE EXCEPTION 'start_month must be between 1900-01-01 and 9989-12-31, got %',
            coalesce(start_month::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_advisory_xact_lock('public.transactions_archive'::regclass::oid::bigint);
    first_month := make_date(extract(year FROM start_month)::integer,
                             extract(month FROM start_month)::integer, 1);
    FOR month_index IN 0..months_ahead LOOP
        month_start := (first_month + make_interval(months => month_index))::date;
        partition_name := 'transactions_archive_' || to_char(month_start, 'YYYY_MM');
        IF to_regclass(format('public.%I', partition_name)) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE public.%I PARTITION OF public.transactions_archive '
                'FOR VALUES FROM (%L) TO (%L)',
                partition_name,
                to_char(month_start, 'YYYY-MM-DD') || ' 00:00:00+00',
                to_char((month_start + interval '1 month')::date, 'YYYY-MM-DD') || ' 00:00:00+00'
            );
            created_count := created_count + 1;
        END IF;
    END LOOP;
    RETURN created_count;
END
$$;

REVOKE ALL ON FUNCTION create_transactions_archive_partitions(integer, date) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION create_transactions_archive_partitions(integer, date)
    TO dwaybank_service;

-- The specification's January 2025 partition, then the current month and twelve ahead; a
-- monthly job keeps calling the function so that the months ahead always exist.
SELECT create_transactions_archive_partitions(0, DATE '2025-01-01');
SELECT create_transactions_archive_partitions(12);

-- Moves up to batch_limit settled (completed, failed or cancelled) transactions created
-- before `before` into the archive, oldest first, and returns how many it moved. Rows are
-- inserted into the archive and then deleted from transactions in the caller's transaction,
-- so a failure moves nothing. Rows locked by another transaction are skipped, not waited for.
-- A transaction that a compliance record still references stays where it is (that foreign
-- key is the specification's, and the record must keep pointing at a live row). The month
-- partitions a batch needs are created on the way. Each move is a DELETE on transactions and
-- is therefore written to the audit log like any other.
CREATE FUNCTION archive_transactions(before timestamptz, batch_limit integer DEFAULT 10000)
RETURNS integer
LANGUAGE plpgsql
SET search_path = public, pg_temp
AS $$
DECLARE
    batch_limit_max CONSTANT integer := 100000;
    batch_ids uuid[];
    batch_month date;
    moved_count integer;
BEGIN
    IF before IS NULL THEN
        RAISE EXCEPTION 'before must not be NULL' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF batch_limit IS NULL OR batch_limit < 1 OR batch_limit > batch_limit_max THEN
        RAISE EXCEPTION 'batch_limit must be between 1 and %, got %',
            batch_limit_max, coalesce(batch_limit::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT array_agg(batch.id) INTO batch_ids
    FROM (
        SELECT t.id
        FROM transactions t
        WHERE t.status IN ('completed', 'failed', 'cancelled')
          AND t.created_at < archive_transactions.before
          AND NOT EXISTS (SELECT 1 FROM compliance_records c WHERE c.transaction_id = t.id)
        ORDER BY t.created_at
        LIMIT batch_limit
        FOR UPDATE OF t SKIP LOCKED
    ) batch;
    IF batch_ids IS NULL THEN
        RETURN 0;
    END IF;
    FOR batch_month IN
        SELECT DISTINCT date_trunc('month', t.created_at AT TIME ZONE 'UTC')::date
        FROM transactions t
        WHERE t.id = ANY (batch_ids)
    LOOP
        PERFORM create_transactions_archive_partitions(0, batch_month);
    END LOOP;
    INSERT INTO transactions_archive SELECT * FROM transactions WHERE id = ANY (batch_ids);
    DELETE FROM transactions WHERE id = ANY (batch_ids);
    GET DIAGNOSTICS moved_count = ROW_COUNT;
    RETURN moved_count;
END
$$;

REVOKE ALL ON FUNCTION archive_transactions(timestamptz, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION archive_transactions(timestamptz, integer) TO dwaybank_service;
