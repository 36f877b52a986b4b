-- Blnk's transaction hooks: URLs called before (PRE_TRANSACTION) and after (POST_TRANSACTION)
-- a transaction, signed like Blnk's webhooks. Blnk keeps them in Redis; here they are rows, so
-- every replica sees the same set and `last_run` / `last_success` survive restarts.
--
-- The bounds are the API's: a timeout of 1-30 seconds (Blnk's default is 30) and at most five
-- retries, so one transaction can wait on a hook for a bounded time.

CREATE TABLE ledger.hooks (
    hook_id       TEXT COLLATE "C" PRIMARY KEY CHECK (hook_id ~ '^hook_[0-9a-f-]{36}$'),
    name          TEXT NOT NULL DEFAULT '' CHECK (length(name) <= 255),
    url           TEXT NOT NULL CHECK (url ~ '^https?://[^/?#\s]+' AND length(url) <= 2048),
    hook_type     TEXT NOT NULL CHECK (hook_type IN ('PRE_TRANSACTION', 'POST_TRANSACTION')),
    active        BOOLEAN NOT NULL DEFAULT false,
    timeout_s     INTEGER NOT NULL CHECK (timeout_s BETWEEN 1 AND 30),
    retry_count   INTEGER NOT NULL CHECK (retry_count BETWEEN 0 AND 5),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_run      TIMESTAMPTZ,
    last_success  BOOLEAN NOT NULL DEFAULT false,
    CONSTRAINT hooks_success_needs_a_run CHECK (last_run IS NOT NULL OR NOT last_success)
);

CREATE INDEX hooks_type_created_at ON ledger.hooks (hook_type, created_at);

GRANT SELECT, INSERT, UPDATE, DELETE ON ledger.hooks TO dwaybank_service;
