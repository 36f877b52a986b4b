-- Blnk's API keys for secure mode: `resource:action` scopes, an owner, an expiry, revocation.
--
-- A key is 256 random bits shown once, at creation; only its SHA-256 is stored. A fast hash is
-- enough here (unlike a password): nobody can enumerate a 256-bit space, and it lets the
-- lookup be one index probe. Revocation is one-way and a key's identity (hash, owner, scopes,
-- expiry) never changes; the trigger below refuses any other update, so a compromised
-- service path cannot widen a key after the fact.

CREATE FUNCTION ledger.api_key_scopes_are_valid(scopes TEXT[]) RETURNS BOOLEAN
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT coalesce(bool_and(scope ~ '^(\*|[a-z][a-z-]{0,31}):(read|write|delete|\*)$'), false)
      FROM unnest(scopes) AS scope
$$;

CREATE TABLE ledger.api_keys (
    api_key_id    TEXT COLLATE "C" PRIMARY KEY CHECK (api_key_id ~ '^api_key_[0-9a-f-]{36}$'),
    key_hash      TEXT COLLATE "C" NOT NULL CHECK (key_hash ~ '^[0-9a-f]{64}$'),
    name          TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 255),
    owner_id      TEXT COLLATE "C" NOT NULL CHECK (length(owner_id) BETWEEN 1 AND 255),
    scopes        TEXT[] NOT NULL
                  CHECK (cardinality(scopes) BETWEEN 1 AND 64 AND ledger.api_key_scopes_are_valid(scopes)),
    expires_at    TIMESTAMPTZ NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_used_at  TIMESTAMPTZ,
    is_revoked    BOOLEAN NOT NULL DEFAULT false,
    revoked_at    TIMESTAMPTZ,
    CONSTRAINT api_keys_key_hash_unique UNIQUE (key_hash),
    CONSTRAINT api_keys_expire_after_creation CHECK (expires_at > created_at),
    CONSTRAINT api_keys_revoked_at_iff_revoked CHECK (is_revoked = (revoked_at IS NOT NULL)),
    CONSTRAINT api_keys_used_after_creation CHECK (last_used_at IS NULL OR last_used_at >= created_at)
);

CREATE INDEX api_keys_owner_created_at ON ledger.api_keys (owner_id, created_at);

CREATE FUNCTION ledger.keep_api_key_identity() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.api_key_id, NEW.key_hash, NEW.name, NEW.owner_id, NEW.scopes, NEW.expires_at, NEW.created_at)
       IS DISTINCT FROM
       (OLD.api_key_id, OLD.key_hash, OLD.name, OLD.owner_id, OLD.scopes, OLD.expires_at, OLD.created_at)
    THEN
        RAISE EXCEPTION 'api key % can change only its last use and its revocation', OLD.api_key_id
            USING ERRCODE = 'check_violation';
    END IF;
    IF OLD.is_revoked AND (NOT NEW.is_revoked OR NEW.revoked_at IS DISTINCT FROM OLD.revoked_at) THEN
        RAISE EXCEPTION 'api key % is revoked for good', OLD.api_key_id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER api_keys_identity_immutable
    BEFORE UPDATE ON ledger.api_keys
    FOR EACH ROW EXECUTE FUNCTION ledger.keep_api_key_identity();

GRANT SELECT, INSERT, UPDATE ON ledger.api_keys TO dwaybank_service;
