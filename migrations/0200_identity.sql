-- Identity: roles and tiers on users, signing keys, refresh-token families, one-time codes,
-- backup codes, WebAuthn credentials, OAuth clients and authorization codes, the message
-- outbox of the local SMS/email provider.
--
-- Where state lives, and why:
--   * Signing keys are here (the record), their private halves envelope-encrypted by
--     kit.crypto under the key-encryption key, bound to the row's kid. A retired key loses its
--     private half at once (it never signs again) and stays published until published_until,
--     when every token it signed has expired.
--   * Refresh tokens are here rather than in Redis: rotation must be atomic with reuse
--     detection, and two concurrent refreshes of one token are serialised by locking the
--     family row. The unique index on parent_id makes "a token has at most one child" a
--     fact PostgreSQL enforces, whatever the code does.
--   * Sessions live in Redis with a TTL (auth/sessions.py) and are mirrored in user_sessions.
--   * Lockout counters live in Redis (written through by the UserShard actors), rate-limit
--     logs in the actors' memory.
--   * Every secret is stored hashed (codes, backup codes, refresh tokens, client secrets) or
--     sealed (private keys, the code pepper, a just-rotated refresh token kept for the
--     concurrent-retry grace period).
--
-- Row-level security follows 0008: the user-owned tables are enabled and forced, with a policy
-- for dwaybank_user limited to the acting user and one admitting everything to
-- dwaybank_service. Tables that no user owns (keys, secrets, OAuth clients, outbox) are
-- granted to the service role only.

ALTER TABLE users
    ADD COLUMN role VARCHAR(20) NOT NULL DEFAULT 'user'
        CONSTRAINT users_role_check CHECK (role IN ('user', 'admin')),
    ADD COLUMN tier VARCHAR(20) NOT NULL DEFAULT 'basic'
        CONSTRAINT users_tier_check CHECK (tier IN ('basic', 'premium', 'enterprise'));

-- ------------------------------------------------------------------ signing keys

CREATE TABLE auth_signing_keys (
    kid             VARCHAR(64) PRIMARY KEY,
    status          VARCHAR(10) NOT NULL CHECK (status IN ('next', 'active', 'retired')),
    algorithm       VARCHAR(10) NOT NULL DEFAULT 'RS256' CHECK (algorithm = 'RS256'),
    public_jwk      JSONB NOT NULL,
    private_key     TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    activated_at    TIMESTAMPTZ,
    retired_at      TIMESTAMPTZ,
    published_until TIMESTAMPTZ,
    CONSTRAINT auth_signing_keys_private_check
        CHECK ((status = 'retired') = (private_key IS NULL)),
    CONSTRAINT auth_signing_keys_activation_check
        CHECK ((status = 'next') = (activated_at IS NULL)),
    CONSTRAINT auth_signing_keys_retirement_check
        CHECK ((status = 'retired') = (retired_at IS NOT NULL AND published_until IS NOT NULL)),
    CONSTRAINT auth_signing_keys_public_check
        CHECK (public_jwk ->> 'kty' = 'RSA' AND NOT public_jwk ?| ARRAY['d', 'p', 'q', 'dp', 'dq', 'qi'])
);

-- At most one key signs, and at most one waits to.
CREATE UNIQUE INDEX auth_signing_keys_one_active ON auth_signing_keys ((status))
    WHERE status IN ('active', 'next');

-- Named secrets of the identity area (the HMAC pepper of codes), sealed by kit.crypto.
CREATE TABLE auth_secrets (
    name       VARCHAR(50) PRIMARY KEY,
    sealed     TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

-- ------------------------------------------------------------------ OAuth clients

CREATE TABLE oauth_clients (
    client_id          VARCHAR(64) PRIMARY KEY CHECK (client_id ~ '^[A-Za-z0-9_\-]{8,64}$'),
    client_secret_hash TEXT,
    name               VARCHAR(100) NOT NULL,
    redirect_uris      TEXT[] NOT NULL CHECK (cardinality(redirect_uris) BETWEEN 1 AND 10),
    allowed_scopes     TEXT[] NOT NULL,
    grant_types        TEXT[] NOT NULL
                       CHECK (grant_types <@ ARRAY['authorization_code', 'refresh_token']::TEXT[]),
    is_first_party     BOOLEAN NOT NULL DEFAULT false,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    disabled_at        TIMESTAMPTZ
);

-- ------------------------------------------------------------------ refresh tokens

CREATE TABLE auth_refresh_families (
    id             UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id        UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    session_id     VARCHAR(64) NOT NULL,
    client_id      VARCHAR(64) REFERENCES oauth_clients(client_id) ON DELETE CASCADE,
    scope          TEXT NOT NULL,
    amr            TEXT[] NOT NULL,
    acr            VARCHAR(20) NOT NULL,
    auth_time      TIMESTAMPTZ NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    expires_at     TIMESTAMPTZ NOT NULL,
    revoked_at     TIMESTAMPTZ,
    revoked_reason VARCHAR(30) CHECK (revoked_reason IN (
        'logout', 'reuse_detected', 'password_changed', 'password_reset', 'session_revoked',
        'client_revoked', 'step_up', 'code_replayed'
    )),
    CONSTRAINT auth_refresh_families_expiry_check CHECK (expires_at > created_at),
    CONSTRAINT auth_refresh_families_revocation_check
        CHECK ((revoked_at IS NULL) = (revoked_reason IS NULL))
);

CREATE INDEX idx_auth_refresh_families_user ON auth_refresh_families(user_id)
    WHERE revoked_at IS NULL;
CREATE INDEX idx_auth_refresh_families_session ON auth_refresh_families(session_id);

CREATE TABLE auth_refresh_tokens (
    id                 UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    family_id          UUID NOT NULL REFERENCES auth_refresh_families(id) ON DELETE CASCADE,
    user_id            UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token_hash         BYTEA NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    parent_id          UUID REFERENCES auth_refresh_tokens(id) ON DELETE CASCADE,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    expires_at         TIMESTAMPTZ NOT NULL,
    used_at            TIMESTAMPTZ,
    -- The child minted from this token, sealed, kept only so that a concurrent retry within
    -- the grace period receives the same child instead of revoking the family.
    replacement_sealed TEXT,
    CONSTRAINT auth_refresh_tokens_use_check CHECK (used_at IS NOT NULL OR replacement_sealed IS NULL)
);

-- A token has at most one child: a second rotation of one token cannot commit.
CREATE UNIQUE INDEX auth_refresh_tokens_one_child ON auth_refresh_tokens(parent_id)
    WHERE parent_id IS NOT NULL;
CREATE INDEX idx_auth_refresh_tokens_family ON auth_refresh_tokens(family_id);
CREATE INDEX idx_auth_refresh_tokens_user ON auth_refresh_tokens(user_id);

-- ------------------------------------------------------------------ one-time codes

-- Email verification, password reset, SMS and email factor codes: 6 digits, at most 10
-- minutes, single use, a bounded number of guesses; only an HMAC of the code is stored.
CREATE TABLE auth_codes (
    id           UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id      UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    purpose      VARCHAR(20) NOT NULL
                 CHECK (purpose IN ('verify_email', 'reset_password', 'enroll_sms', 'enroll_email')),
    code_hash    BYTEA NOT NULL CHECK (octet_length(code_hash) = 32),
    destination  VARCHAR(255),
    attempts     INTEGER NOT NULL DEFAULT 0,
    attempts_max INTEGER NOT NULL CHECK (attempts_max BETWEEN 1 AND 10),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    expires_at   TIMESTAMPTZ NOT NULL,
    consumed_at  TIMESTAMPTZ,
    CONSTRAINT auth_codes_attempts_check CHECK (attempts BETWEEN 0 AND attempts_max),
    CONSTRAINT auth_codes_lifetime_check
        CHECK (expires_at > created_at AND expires_at <= created_at + INTERVAL '10 minutes')
);

CREATE INDEX idx_auth_codes_open ON auth_codes(user_id, purpose) WHERE consumed_at IS NULL;

CREATE TABLE auth_backup_codes (
    id         UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id    UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    code_hash  BYTEA NOT NULL CHECK (octet_length(code_hash) = 32),
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    used_at    TIMESTAMPTZ,
    UNIQUE (user_id, code_hash)
);

-- ------------------------------------------------------------------ WebAuthn

CREATE TABLE webauthn_credentials (
    id            UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id       UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    credential_id BYTEA NOT NULL UNIQUE CHECK (octet_length(credential_id) BETWEEN 16 AND 1023),
    public_key    BYTEA NOT NULL,
    sign_count    BIGINT NOT NULL DEFAULT 0 CHECK (sign_count >= 0),
    transports    TEXT[] NOT NULL DEFAULT '{}',
    name          VARCHAR(100) NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    last_used_at  TIMESTAMPTZ
);

CREATE INDEX idx_webauthn_credentials_user ON webauthn_credentials(user_id);

-- ------------------------------------------------------------------ authorization codes

CREATE TABLE oauth_authorization_codes (
    code_hash             BYTEA PRIMARY KEY CHECK (octet_length(code_hash) = 32),
    client_id             VARCHAR(64) NOT NULL REFERENCES oauth_clients(client_id) ON DELETE CASCADE,
    user_id               UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    redirect_uri          TEXT NOT NULL,
    scope                 TEXT NOT NULL,
    code_challenge        VARCHAR(128) NOT NULL CHECK (length(code_challenge) = 43),
    code_challenge_method VARCHAR(10) NOT NULL CHECK (code_challenge_method = 'S256'),
    nonce                 VARCHAR(255),
    amr                   TEXT[] NOT NULL,
    acr                   VARCHAR(20) NOT NULL,
    auth_time             TIMESTAMPTZ NOT NULL,
    created_at            TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    expires_at            TIMESTAMPTZ NOT NULL,
    consumed_at           TIMESTAMPTZ,
    family_id             UUID REFERENCES auth_refresh_families(id) ON DELETE SET NULL,
    CONSTRAINT oauth_authorization_codes_lifetime_check
        CHECK (expires_at > created_at AND expires_at <= created_at + INTERVAL '10 minutes')
);

CREATE INDEX idx_oauth_authorization_codes_user ON oauth_authorization_codes(user_id);

-- ------------------------------------------------------------------ outbox

-- Messages the local provider "sent" (development and tests); never used for a real provider.
CREATE TABLE auth_outbox (
    id         UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    channel    VARCHAR(10) NOT NULL CHECK (channel IN ('sms', 'email')),
    recipient  VARCHAR(255) NOT NULL,
    subject    VARCHAR(255),
    body       TEXT NOT NULL CHECK (length(body) <= 4000),
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE INDEX idx_auth_outbox_recipient ON auth_outbox(recipient, created_at DESC);

-- ------------------------------------------------------------------ privileges and RLS

GRANT SELECT, INSERT, UPDATE, DELETE ON
    auth_signing_keys, auth_secrets, oauth_clients, auth_refresh_families, auth_refresh_tokens,
    auth_codes, auth_backup_codes, webauthn_credentials, oauth_authorization_codes, auth_outbox
    TO dwaybank_service;

GRANT SELECT, INSERT, UPDATE, DELETE ON
    auth_refresh_families, auth_refresh_tokens, auth_codes, auth_backup_codes,
    webauthn_credentials, oauth_authorization_codes
    TO dwaybank_user;

ALTER TABLE auth_refresh_families ENABLE ROW LEVEL SECURITY;
ALTER TABLE auth_refresh_families FORCE ROW LEVEL SECURITY;
CREATE POLICY auth_refresh_families_own_rows ON auth_refresh_families FOR ALL TO dwaybank_user
    USING (user_id = NULLIF(current_setting('dwaybank.user_id', true), '')::uuid)
    WITH CHECK (user_id = NULLIF(current_setting('dwaybank.user_id', true), '')::uuid);
CREATE POLICY auth_refresh_families_service ON auth_refresh_families FOR ALL TO dwaybank_service
    USING (true) WITH CHECK (true);

ALTER TABLE auth_refresh_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE auth_refresh_tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY auth_refresh_tokens_own_rows ON auth_refresh_tokens FOR ALL TO dwaybank_user
    USING (user_id = NULLIF(current_setting('dwaybank.user_id', true), '')::uuid)
    WITH CHECK (user_id = NULLIF(current_setting('dwaybank.user_id', true), '')::uuid);
CREATE POLICY auth_refresh_tokens_service ON auth_refresh_tokens FOR ALL TO dwaybank_service
    USING (true) WITH CHECK (true);

ALTER TABLE auth_codes ENABLE ROW LEVEL SECURITY;
ALTER TABLE auth_codes FORCE ROW LEVEL SECURITY;
CREATE POLICY auth_codes_own_rows ON auth_codes FOR ALL TO dwaybank_user
    USING (user_id = NULLIF(current_setting('dwaybank.user_id', true), '')::uuid)
    WITH CHECK (user_id = NULLIF(current_setting('dwaybank.user_id', true), '')::uuid);
CREATE POLICY auth_codes_service ON auth_codes FOR ALL TO dwaybank_service
    USING (true) WITH CHECK (true);

ALTER TABLE auth_backup_codes ENABLE ROW LEVEL SECURITY;
ALTER TABLE auth_backup_codes FORCE ROW LEVEL SECURITY;
CREATE POLICY auth_backup_codes_own_rows ON auth_backup_codes FOR ALL TO dwaybank_user
    USING (user_id = NULLIF(current_setting('dwaybank.user_id', true), '')::uuid)
    WITH CHECK (user_id = NULLIF(current_setting('dwaybank.user_id', true), '')::uuid);
CREATE POLICY auth_backup_codes_service ON auth_backup_codes FOR ALL TO dwaybank_service
    USING (true) WITH CHECK (true);

ALTER TABLE webauthn_credentials ENABLE ROW LEVEL SECURITY;
ALTER TABLE webauthn_credentials FORCE ROW LEVEL SECURITY;
CREATE POLICY webauthn_credentials_own_rows ON webauthn_credentials FOR ALL TO dwaybank_user
    USING (user_id = NULLIF(current_setting('dwaybank.user_id', true), '')::uuid)
    WITH CHECK (user_id = NULLIF(current_setting('dwaybank.user_id', true), '')::uuid);
CREATE POLICY webauthn_credentials_service ON webauthn_credentials FOR ALL TO dwaybank_service
    USING (true) WITH CHECK (true);

ALTER TABLE oauth_authorization_codes ENABLE ROW LEVEL SECURITY;
ALTER TABLE oauth_authorization_codes FORCE ROW LEVEL SECURITY;
CREATE POLICY oauth_authorization_codes_own_rows ON oauth_authorization_codes FOR ALL
    TO dwaybank_user
    USING (user_id = NULLIF(current_setting('dwaybank.user_id', true), '')::uuid)
    WITH CHECK (user_id = NULLIF(current_setting('dwaybank.user_id', true), '')::uuid);
CREATE POLICY oauth_authorization_codes_service ON oauth_authorization_codes FOR ALL
    TO dwaybank_service
    USING (true) WITH CHECK (true);
