-- Exchange rates for multi-currency transfers, and the record of compensating transactions
-- posted to a remote Blnk server.
--
-- A rate says: 1 unit of `base_currency` buys `rate` units of `quote_currency` (major units).
-- One row per pair: the latest rate from its source (the static file shipped with the code, an
-- HTTP provider, or an operator). A transfer records the rate it used in both legs' metadata,
-- so history never depends on this table.

CREATE TABLE ledger.exchange_rates (
    base_currency   TEXT NOT NULL CHECK (base_currency ~ '^[A-Za-z0-9_.:-]{1,32}$'),
    quote_currency  TEXT NOT NULL CHECK (quote_currency ~ '^[A-Za-z0-9_.:-]{1,32}$'),
    rate            NUMERIC NOT NULL CHECK (rate > 0),
    source          TEXT NOT NULL CHECK (length(source) BETWEEN 1 AND 64),
    as_of           TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (base_currency, quote_currency),
    CONSTRAINT exchange_rates_distinct_pair CHECK (base_currency <> quote_currency)
);

-- When a multi-step operation against a remote Blnk fails midway, the legs that succeeded are
-- reversed by compensating transactions; each one is recorded here, whatever its fate, so an
-- operator can see (and finish) every compensation that did not go through.
CREATE TABLE ledger.compensations (
    compensation_id             TEXT COLLATE "C" PRIMARY KEY CHECK (length(compensation_id) BETWEEN 1 AND 64),
    operation_id                TEXT COLLATE "C" NOT NULL CHECK (length(operation_id) BETWEEN 1 AND 255),
    original_reference          TEXT COLLATE "C" NOT NULL CHECK (length(original_reference) BETWEEN 1 AND 255),
    original_transaction_id     TEXT COLLATE "C" NOT NULL DEFAULT '',
    compensating_reference      TEXT COLLATE "C" NOT NULL CHECK (length(compensating_reference) BETWEEN 1 AND 255),
    compensating_transaction_id TEXT COLLATE "C" NOT NULL DEFAULT '',
    reason                      TEXT NOT NULL CHECK (length(reason) <= 1024),
    status                      TEXT NOT NULL CHECK (status IN ('posted', 'failed')),
    error                       TEXT CHECK (length(error) <= 1024),
    created_at                  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX compensations_operation ON ledger.compensations (operation_id);
CREATE INDEX compensations_failed ON ledger.compensations (created_at) WHERE status = 'failed';

GRANT SELECT, INSERT, UPDATE, DELETE ON ledger.exchange_rates, ledger.compensations TO dwaybank_service;
