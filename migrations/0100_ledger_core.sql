-- The double-entry ledger, in Blnk's model, in its own schema.
--
-- Identifier columns use the "C" collation: they are compared byte by byte, which keeps their
-- indexes several times cheaper to maintain than under a linguistic collation.
--
-- Amounts are NUMERIC with scale 0: integer minor units of any size (Blnk's big.Int). A
-- balance holds `balance = credit_balance - debit_balance` and the inflight pair; a
-- transaction moves `precise_amount` from a source balance to a destination balance.
--
-- Balances change only in commit batches. Each batch records what it did to each balance
-- (`balance_changes`, the summed entries of the batch); a deferred constraint trigger on the
-- batch row proves at COMMIT that those changes are exactly what the batch's transactions
-- imply (each transaction debits one balance and credits another by the same amount, in its
-- own currency) and that they net to zero in every currency. Batches and their changes are
-- append-only. `dwaybank ledger verify` proves the rest: every currency sums to zero and every
-- balance equals the sum of its recorded changes and of its transactions.

CREATE TABLE ledger.ledgers (
    ledger_id   TEXT COLLATE "C" PRIMARY KEY
                CHECK (ledger_id = 'general_ledger_id' OR ledger_id ~ '^ldg_[0-9a-f-]{36}$'),
    name        TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 255),
    meta_data   JSONB NOT NULL DEFAULT '{}',
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Blnk seeds one General Ledger with this literal id; `@indicator` balances live in it.
INSERT INTO ledger.ledgers (ledger_id, name) VALUES ('general_ledger_id', 'General Ledger');

CREATE TABLE ledger.balances (
    balance_id               TEXT COLLATE "C" PRIMARY KEY CHECK (balance_id ~ '^bln_[0-9a-f-]{36}$'),
    ledger_id                TEXT COLLATE "C" NOT NULL REFERENCES ledger.ledgers (ledger_id),
    identity_id              TEXT COLLATE "C",
    indicator                TEXT COLLATE "C" CHECK (indicator ~ '^@\S{1,254}$'),
    currency                 TEXT NOT NULL CHECK (currency ~ '^[A-Za-z0-9_.:-]{1,32}$'),
    balance                  NUMERIC NOT NULL DEFAULT 0,
    credit_balance           NUMERIC NOT NULL DEFAULT 0 CHECK (credit_balance >= 0),
    debit_balance            NUMERIC NOT NULL DEFAULT 0 CHECK (debit_balance >= 0),
    inflight_balance         NUMERIC NOT NULL DEFAULT 0,
    inflight_credit_balance  NUMERIC NOT NULL DEFAULT 0 CHECK (inflight_credit_balance >= 0),
    inflight_debit_balance   NUMERIC NOT NULL DEFAULT 0 CHECK (inflight_debit_balance >= 0),
    version                  BIGINT NOT NULL DEFAULT 0 CHECK (version >= 0),
    track_fund_lineage       BOOLEAN NOT NULL DEFAULT false,
    allocation_strategy      TEXT NOT NULL DEFAULT 'FIFO'
                             CHECK (allocation_strategy IN ('FIFO', 'LIFO', 'PROPORTIONAL')),
    meta_data                JSONB NOT NULL DEFAULT '{}',
    created_at               TIMESTAMPTZ NOT NULL DEFAULT now(),
    inflight_expires_at      TIMESTAMPTZ,
    CONSTRAINT balances_balance_is_credit_minus_debit
        CHECK (balance = credit_balance - debit_balance),
    CONSTRAINT balances_inflight_is_credit_minus_debit
        CHECK (inflight_balance = inflight_credit_balance - inflight_debit_balance),
    CONSTRAINT balances_amounts_are_whole
        CHECK (credit_balance = trunc(credit_balance) AND debit_balance = trunc(debit_balance)
               AND inflight_credit_balance = trunc(inflight_credit_balance)
               AND inflight_debit_balance = trunc(inflight_debit_balance)),
    CONSTRAINT balances_indicator_in_general_ledger
        CHECK (indicator IS NULL OR ledger_id = 'general_ledger_id')
) WITH (fillfactor = 70);  -- room on each page for HOT updates: balances are updated constantly

CREATE UNIQUE INDEX balances_indicator_currency ON ledger.balances (indicator, currency)
    WHERE indicator IS NOT NULL;
CREATE INDEX balances_ledger_id ON ledger.balances (ledger_id);
CREATE INDEX balances_identity_id ON ledger.balances (identity_id) WHERE identity_id IS NOT NULL;
CREATE INDEX balances_created_at ON ledger.balances (created_at);

CREATE TABLE ledger.commit_batches (
    batch_id    BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    writer      TEXT NOT NULL CHECK (length(writer) <= 64),
    item_count  INTEGER NOT NULL CHECK (item_count >= 0),
    txid        BIGINT NOT NULL DEFAULT txid_current(),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE ledger.transactions (
    transaction_id        TEXT COLLATE "C" PRIMARY KEY CHECK (transaction_id ~ '^txn_[0-9a-f-]{36}$'),
    parent_transaction    TEXT COLLATE "C" NOT NULL DEFAULT '',
    source                TEXT COLLATE "C" NOT NULL CHECK (length(source) BETWEEN 1 AND 255),
    destination           TEXT COLLATE "C" NOT NULL CHECK (length(destination) BETWEEN 1 AND 255),
    reference             TEXT COLLATE "C" NOT NULL CHECK (length(reference) BETWEEN 1 AND 255),
    precise_amount        NUMERIC NOT NULL CHECK (precise_amount >= 0 AND precise_amount = trunc(precise_amount)),
    precision             NUMERIC NOT NULL CHECK (precision >= 1 AND precision = trunc(precision)),
    currency              TEXT NOT NULL CHECK (currency ~ '^[A-Za-z0-9_.:-]{1,32}$'),
    description           TEXT NOT NULL DEFAULT '' CHECK (length(description) <= 4096),
    status                TEXT NOT NULL
                          CHECK (status IN ('QUEUED', 'SCHEDULED', 'APPLIED', 'INFLIGHT', 'VOID', 'REJECTED')),
    -- What the row did to its two balances: nothing, an applied move, a hold, the commit of
    -- (part of) a hold, or the release of a hold's remainder.
    effect                TEXT NOT NULL
                          CHECK (effect IN ('none', 'applied', 'inflight', 'commit', 'void')),
    hash                  TEXT NOT NULL DEFAULT '',
    allow_overdraft       BOOLEAN NOT NULL DEFAULT false,
    overdraft_limit       NUMERIC NOT NULL DEFAULT 0 CHECK (overdraft_limit >= 0),
    inflight              BOOLEAN NOT NULL DEFAULT false,
    skip_queue            BOOLEAN NOT NULL DEFAULT false,
    atomic                BOOLEAN NOT NULL DEFAULT false,
    sources               JSONB,
    destinations          JSONB,
    -- An inflight hold's progress: what its commits and its void have used. Never more than
    -- the hold, and only a hold has any.
    committed_amount      NUMERIC NOT NULL DEFAULT 0 CHECK (committed_amount >= 0),
    voided_amount         NUMERIC NOT NULL DEFAULT 0 CHECK (voided_amount >= 0),
    -- A queued or scheduled request's result: {status, transaction_id, reason?}.
    outcome               JSONB,
    created_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    effective_date        TIMESTAMPTZ,
    scheduled_for         TIMESTAMPTZ,
    inflight_expiry_date  TIMESTAMPTZ,
    inflight_commit_date  TIMESTAMPTZ,
    meta_data             JSONB NOT NULL DEFAULT '{}',
    -- The commit batch that wrote the row (checked by the batch's trigger, not a foreign key:
    -- a per-row foreign-key check would cost more than the rest of the insert).
    batch_id              BIGINT,
    CONSTRAINT transactions_reference_unique UNIQUE (reference),
    CONSTRAINT transactions_hold_never_overused
        CHECK (committed_amount + voided_amount <= precise_amount),
    CONSTRAINT transactions_only_holds_progress
        CHECK (status = 'INFLIGHT' OR (committed_amount = 0 AND voided_amount = 0)),
    CONSTRAINT transactions_not_to_itself CHECK (source <> destination),
    CONSTRAINT transactions_posted_in_a_batch
        CHECK (batch_id IS NOT NULL OR effect = 'none'),
    CONSTRAINT transactions_effect_matches_status
        CHECK ((status = 'APPLIED' AND effect IN ('applied', 'commit'))
               OR (status = 'INFLIGHT' AND effect = 'inflight')
               OR (status = 'VOID' AND effect = 'void')
               OR (status IN ('QUEUED', 'SCHEDULED', 'REJECTED') AND effect = 'none'))
);

CREATE INDEX transactions_parent ON ledger.transactions (parent_transaction)
    WHERE parent_transaction <> '';
CREATE INDEX transactions_created_at ON ledger.transactions (created_at);
CREATE INDEX transactions_source ON ledger.transactions (source);
CREATE INDEX transactions_destination ON ledger.transactions (destination);
CREATE INDEX transactions_due_scheduled ON ledger.transactions (scheduled_for)
    WHERE status = 'SCHEDULED';
CREATE INDEX transactions_due_expiry ON ledger.transactions (inflight_expiry_date)
    WHERE status = 'INFLIGHT' AND inflight_expiry_date IS NOT NULL;
CREATE INDEX transactions_due_commit ON ledger.transactions (inflight_commit_date)
    WHERE status = 'INFLIGHT' AND inflight_commit_date IS NOT NULL;
CREATE INDEX transactions_batch ON ledger.transactions (batch_id);

-- What each commit batch did to each balance: one row per (batch, balance), the summed change
-- of each figure. Every balance equals the sum of its rows here; the batch's deferred trigger
-- proves the rows of a batch are exactly what its transactions imply and net to zero per
-- currency. (One row per touched balance per batch, not per posting: a hot balance costs one
-- row per batch however many postings touched it.)
CREATE TABLE ledger.balance_changes (
    batch_id         BIGINT NOT NULL,
    balance_id       TEXT COLLATE "C" NOT NULL,
    credit           NUMERIC NOT NULL DEFAULT 0 CHECK (credit = trunc(credit)),
    debit            NUMERIC NOT NULL DEFAULT 0 CHECK (debit = trunc(debit)),
    inflight_credit  NUMERIC NOT NULL DEFAULT 0 CHECK (inflight_credit = trunc(inflight_credit)),
    inflight_debit   NUMERIC NOT NULL DEFAULT 0 CHECK (inflight_debit = trunc(inflight_debit)),
    PRIMARY KEY (batch_id, balance_id)
);

CREATE INDEX balance_changes_balance ON ledger.balance_changes (balance_id);

-- Idempotency-Key: the first response to a key is the answer to every retry with the same
-- request; another request under the same key is refused.
CREATE TABLE ledger.idempotency_keys (
    idempotency_key  TEXT COLLATE "C" PRIMARY KEY CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    request_hash     TEXT NOT NULL CHECK (length(request_hash) = 64),
    status_code      INTEGER NOT NULL CHECK (status_code BETWEEN 200 AND 599),
    response         JSONB NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX idempotency_keys_created_at ON ledger.idempotency_keys (created_at);

-- The transactional outbox: events written in the same transaction as what they describe.
-- A transaction event names its transaction (`entity_id`) and the dispatcher reads the row
-- when it delivers (what a transaction moved never changes); other events carry a payload.
CREATE TABLE ledger.outbox (
    event_id      TEXT COLLATE "C" PRIMARY KEY CHECK (event_id ~ '^evt_[0-9a-f-]{36}$'),
    event_type    TEXT NOT NULL CHECK (length(event_type) BETWEEN 1 AND 64),
    entity_id     TEXT COLLATE "C" NOT NULL CHECK (length(entity_id) BETWEEN 1 AND 255),
    payload       JSONB,
    batch_id      BIGINT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    dispatched_at TIMESTAMPTZ
);

CREATE INDEX outbox_undispatched ON ledger.outbox (created_at) WHERE dispatched_at IS NULL;

-- ---------------------------------------------------------------- integrity triggers

-- At COMMIT: the balance changes a batch recorded are exactly those its transactions imply
-- (so no balance moved without a transaction, and no transaction without its balances
-- moving), they net to zero in every currency, and every transaction's balances exist and are
-- in its currency.
CREATE FUNCTION ledger.check_batch_balanced() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    bad RECORD;
BEGIN
    WITH moves AS (
        SELECT t.source AS balance_id, t.currency,
               0::numeric AS credit,
               CASE WHEN t.effect IN ('applied', 'commit') THEN t.precise_amount ELSE 0 END AS debit,
               0::numeric AS inflight_credit,
               CASE t.effect WHEN 'inflight' THEN t.precise_amount
                             WHEN 'commit' THEN -t.precise_amount
                             WHEN 'void' THEN -t.precise_amount ELSE 0 END AS inflight_debit
          FROM ledger.transactions t
         WHERE t.batch_id = NEW.batch_id AND t.effect <> 'none'
        UNION ALL
        SELECT t.destination, t.currency,
               CASE WHEN t.effect IN ('applied', 'commit') THEN t.precise_amount ELSE 0 END,
               0,
               CASE t.effect WHEN 'inflight' THEN t.precise_amount
                             WHEN 'commit' THEN -t.precise_amount
                             WHEN 'void' THEN -t.precise_amount ELSE 0 END,
               0
          FROM ledger.transactions t
         WHERE t.batch_id = NEW.batch_id AND t.effect <> 'none'
    ), implied AS (
        SELECT balance_id, min(currency) AS currency, max(currency) AS other_currency,
               sum(credit) AS credit, sum(debit) AS debit,
               sum(inflight_credit) AS inflight_credit, sum(inflight_debit) AS inflight_debit
          FROM moves GROUP BY balance_id
    ), recorded AS (
        SELECT * FROM ledger.balance_changes WHERE batch_id = NEW.batch_id
    )
    SELECT coalesce(i.balance_id, r.balance_id) AS balance_id, b.currency AS balance_currency,
           i.currency, i.other_currency
      INTO bad
      FROM implied i
      FULL JOIN recorded r ON r.balance_id = i.balance_id
      LEFT JOIN ledger.balances b ON b.balance_id = coalesce(i.balance_id, r.balance_id)
     WHERE i.balance_id IS NULL OR r.balance_id IS NULL OR b.balance_id IS NULL
        OR i.currency <> i.other_currency OR i.currency <> b.currency
        OR (i.credit, i.debit, i.inflight_credit, i.inflight_debit)
           <> (r.credit, r.debit, r.inflight_credit, r.inflight_debit)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger batch %: balance % changed other than its transactions imply (balance currency %, transaction currencies % / %)',
            NEW.batch_id, bad.balance_id, bad.balance_currency, bad.currency, bad.other_currency
            USING ERRCODE = 'check_violation';
    END IF;

    SELECT b.currency, sum(r.credit - r.debit) AS main, sum(r.inflight_credit - r.inflight_debit) AS held
      INTO bad
      FROM ledger.balance_changes r JOIN ledger.balances b USING (balance_id)
     WHERE r.batch_id = NEW.batch_id
     GROUP BY b.currency
    HAVING sum(r.credit - r.debit) <> 0 OR sum(r.inflight_credit - r.inflight_debit) <> 0
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger batch % does not net to zero in % (main %, inflight %)',
            NEW.batch_id, bad.currency, bad.main, bad.held
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER commit_batches_balanced
    AFTER INSERT ON ledger.commit_batches
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger.check_batch_balanced();

-- Balance changes and transactions join only a batch opened by the same transaction, so no row
-- escapes the check above (shared by both tables' statement triggers; the transition table is
-- named new_rows in both).
CREATE FUNCTION ledger.check_rows_in_open_batch() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM new_rows e
          LEFT JOIN ledger.commit_batches b ON b.batch_id = e.batch_id
         WHERE e.batch_id IS NOT NULL AND (b.batch_id IS NULL OR b.txid <> txid_current())
    ) THEN
        RAISE EXCEPTION '% rows may only join a batch opened by the same transaction', TG_TABLE_NAME
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER balance_changes_in_open_batch
    AFTER INSERT ON ledger.balance_changes
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.check_rows_in_open_batch();

CREATE TRIGGER transactions_in_open_batch
    AFTER INSERT ON ledger.transactions
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.check_rows_in_open_batch();

CREATE FUNCTION ledger.refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER balance_changes_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger.balance_changes
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_change();
CREATE TRIGGER commit_batches_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger.commit_batches
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_change();

-- What a transaction moved never changes; only a hold's progress, a queued request's outcome
-- and the metadata may.
CREATE FUNCTION ledger.keep_transaction_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.transaction_id, NEW.parent_transaction, NEW.source, NEW.destination, NEW.reference,
        NEW.precise_amount, NEW.precision, NEW.currency, NEW.status, NEW.effect, NEW.inflight,
        NEW.allow_overdraft, NEW.created_at, NEW.effective_date, NEW.batch_id)
       IS DISTINCT FROM
       (OLD.transaction_id, OLD.parent_transaction, OLD.source, OLD.destination, OLD.reference,
        OLD.precise_amount, OLD.precision, OLD.currency, OLD.status, OLD.effect, OLD.inflight,
        OLD.allow_overdraft, OLD.created_at, OLD.effective_date, OLD.batch_id)
    THEN
        RAISE EXCEPTION 'transaction % is immutable except for its progress, outcome and metadata',
            OLD.transaction_id USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.committed_amount < OLD.committed_amount OR NEW.voided_amount < OLD.voided_amount THEN
        RAISE EXCEPTION 'a hold''s progress only grows' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER transactions_immutable
    BEFORE UPDATE ON ledger.transactions
    FOR EACH ROW EXECUTE FUNCTION ledger.keep_transaction_immutable();

CREATE TRIGGER transactions_no_delete
    BEFORE DELETE OR TRUNCATE ON ledger.transactions
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_change();

GRANT USAGE ON SCHEMA ledger TO dwaybank_service;
GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA ledger TO dwaybank_service;
