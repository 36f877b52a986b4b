-- Balance monitors, webhook subscriptions and deliveries, and the dispatcher's progress.
--
-- Events come from two places. A transaction's events need no row of their own: each
-- transaction carries the id of the commit batch that wrote it, so the dispatcher reads the
-- transactions of every committed batch it has not yet fanned out. Other events (bulk results,
-- balance monitors, balance.created) are rows of `ledger.outbox`.
--
-- Progress over batches is tracked per batch, never per transaction, and never by writing to
-- the ledger's own rows: `dispatched_batches` holds one row per fanned-out batch, and
-- `event_cursor.txid_floor` is a transaction-id horizon below which every batch is known to be
-- fanned out. Batch ids are assigned before COMMIT, so concurrent writers make them visible out
-- of order; transaction ids settle that: every transaction with an id below a snapshot's xmin
-- has finished, so once every visible batch written by such transactions is fanned out, none
-- can appear later and the floor moves up to that xmin.

CREATE TABLE ledger.balance_monitors (
    monitor_id     TEXT COLLATE "C" PRIMARY KEY CHECK (monitor_id ~ '^mon_[0-9a-f-]{36}$'),
    balance_id     TEXT COLLATE "C" NOT NULL CHECK (length(balance_id) BETWEEN 1 AND 255),
    field          TEXT NOT NULL CHECK (field IN ('balance', 'credit_balance', 'debit_balance',
                       'inflight_balance', 'inflight_credit_balance', 'inflight_debit_balance')),
    operator       TEXT NOT NULL CHECK (operator IN ('>', '<', '>=', '<=', '!=', '==')),
    value          NUMERIC NOT NULL,
    precision      NUMERIC NOT NULL CHECK (precision >= 1 AND precision = trunc(precision)),
    -- value x precision, truncated toward zero (Blnk: int64(value * precision)).
    precise_value  NUMERIC NOT NULL CHECK (precise_value = trunc(precise_value)),
    description    TEXT NOT NULL DEFAULT '' CHECK (length(description) <= 4096),
    -- Write-only through the API: stored, never serialised back.
    call_back_url  TEXT NOT NULL DEFAULT '' CHECK (length(call_back_url) <= 2048),
    meta_data      JSONB NOT NULL DEFAULT '{}',
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX balance_monitors_balance ON ledger.balance_monitors (balance_id);
CREATE INDEX balance_monitors_created_at ON ledger.balance_monitors (created_at);

-- Per-event-type subscriptions (Blnk has one global URL). The signing secret is sealed with
-- the envelope cipher when one is configured (`secret_is_sealed`).
CREATE TABLE ledger.webhook_subscriptions (
    subscription_id   TEXT COLLATE "C" PRIMARY KEY CHECK (subscription_id ~ '^whk_[0-9a-f-]{36}$'),
    url               TEXT NOT NULL CHECK (url ~ '^https?://' AND length(url) <= 2048),
    event_types       TEXT[] NOT NULL CHECK (cardinality(event_types) BETWEEN 1 AND 64),
    secret            TEXT NOT NULL CHECK (length(secret) BETWEEN 1 AND 4096),
    secret_is_sealed  BOOLEAN NOT NULL,
    active            BOOLEAN NOT NULL DEFAULT true,
    description       TEXT NOT NULL DEFAULT '' CHECK (length(description) <= 4096),
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per (subscription, event): the exact body to send, and its delivery state.
CREATE TABLE ledger.webhook_deliveries (
    delivery_id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subscription_id   TEXT COLLATE "C" NOT NULL
                      REFERENCES ledger.webhook_subscriptions (subscription_id) ON DELETE CASCADE,
    event_id          TEXT COLLATE "C" NOT NULL CHECK (event_id ~ '^evt_[0-9a-f-]{36}$'),
    event_type        TEXT NOT NULL CHECK (length(event_type) BETWEEN 1 AND 64),
    body              TEXT NOT NULL,
    status            TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts          INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_error        TEXT CHECK (length(last_error) <= 1024),
    last_status_code  INTEGER,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    delivered_at      TIMESTAMPTZ,
    CONSTRAINT webhook_deliveries_once_per_event UNIQUE (subscription_id, event_id),
    CONSTRAINT webhook_deliveries_delivered_has_time
        CHECK ((status = 'delivered') = (delivered_at IS NOT NULL))
);

CREATE INDEX webhook_deliveries_due ON ledger.webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_subscription ON ledger.webhook_deliveries (subscription_id, delivery_id);

-- Batches fanned out above the floor (rows below it are pruned).
CREATE TABLE ledger.dispatched_batches (
    batch_id       BIGINT PRIMARY KEY,
    txid           BIGINT NOT NULL,
    event_count    INTEGER NOT NULL CHECK (event_count >= 0),
    dispatched_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX dispatched_batches_txid ON ledger.dispatched_batches (txid);

CREATE TABLE ledger.event_cursor (
    name        TEXT PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 64),
    txid_floor  BIGINT NOT NULL CHECK (txid_floor >= 0),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Start at the present: batches committed before events existed are history, not news.
INSERT INTO ledger.event_cursor (name, txid_floor)
    VALUES ('batches', txid_snapshot_xmin(txid_current_snapshot()));

-- The dispatcher finds batches by transaction id (one row per batch: no per-posting cost).
CREATE INDEX commit_batches_txid ON ledger.commit_batches (txid);

-- The scheduler's due rows. The core's partial indexes keep every SCHEDULED row and every hold
-- forever (a run scheduled row keeps its status, a settled hold stays INFLIGHT); these hold
-- only rows with something left to do, so a tick reads what is due and nothing else.
CREATE INDEX transactions_scheduled_pending ON ledger.transactions (scheduled_for)
    WHERE status = 'SCHEDULED' AND outcome IS NULL;
CREATE INDEX transactions_expiry_pending ON ledger.transactions (inflight_expiry_date)
    WHERE status = 'INFLIGHT' AND inflight_expiry_date IS NOT NULL
      AND committed_amount + voided_amount < precise_amount;
CREATE INDEX transactions_commit_pending ON ledger.transactions (inflight_commit_date)
    WHERE status = 'INFLIGHT' AND inflight_commit_date IS NOT NULL
      AND committed_amount + voided_amount < precise_amount;

GRANT SELECT, INSERT, UPDATE, DELETE ON ledger.balance_monitors, ledger.webhook_subscriptions,
    ledger.webhook_deliveries, ledger.dispatched_batches, ledger.event_cursor TO dwaybank_service;
