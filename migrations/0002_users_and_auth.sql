-- Users, multi-factor authentication and sessions (specification section 2.2).
--
-- Columns, defaults, CHECKs, UNIQUEs, foreign keys and index names are the specification's.
-- Deliberate deviations, here and in every later file of the data model:
--   * TIMESTAMP becomes TIMESTAMPTZ: the bank never stores a naive datetime, and an instant
--     must mean the same thing whatever the session's TimeZone is.
--   * created_at / updated_at, which default to NOW(), are also NOT NULL: a row always knows
--     when it was made and last changed.
--   * A few CHECKs that the specification leaves out, but that every valid row satisfies, are
--     added under explicit names; the specification's own CHECKs keep PostgreSQL's default
--     names (table_column_check).
--   * Foreign keys the specification leaves unindexed get an index, so that a cascade or a
--     per-user lookup never scans the whole child table.
-- Email normalisation (case, whitespace) is the application's job, so email is only required
-- to look like an address, not to be lower case.

CREATE TABLE users (
    id                UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    email             VARCHAR(255) UNIQUE NOT NULL,
    password_hash     VARCHAR(255) NOT NULL,
    phone_number      VARCHAR(20),
    kyc_status        VARCHAR(20) DEFAULT 'pending'
                      CHECK (kyc_status IN ('pending', 'approved', 'rejected', 'under_review')),
    kyc_data          JSONB,
    risk_profile      JSONB DEFAULT '{"level": "medium", "score": 50}',
    preferences       JSONB DEFAULT '{}',
    is_active         BOOLEAN DEFAULT true,
    email_verified_at TIMESTAMPTZ,
    phone_verified_at TIMESTAMPTZ,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    deleted_at        TIMESTAMPTZ,
    -- Every address has a local part before its '@'.
    CONSTRAINT users_email_shape_check CHECK (position('@' IN email) > 1)
);

CREATE INDEX idx_users_email ON users(email);
CREATE INDEX idx_users_kyc_status ON users(kyc_status);
CREATE INDEX idx_users_active ON users(is_active) WHERE is_active = true;

CREATE TABLE user_mfa (
    id            UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id       UUID REFERENCES users(id) ON DELETE CASCADE,
    method        VARCHAR(20) NOT NULL CHECK (method IN ('totp', 'sms', 'email', 'biometric')),
    secret_key    VARCHAR(255),
    backup_codes  TEXT[],
    phone_number  VARCHAR(20),
    email_address VARCHAR(255),
    is_enabled    BOOLEAN DEFAULT false,
    is_primary    BOOLEAN DEFAULT false,
    last_used_at  TIMESTAMPTZ,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    -- Its index also serves lookups and cascades by user_id.
    UNIQUE (user_id, method)
);

CREATE TABLE user_sessions (
    id            UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id       UUID REFERENCES users(id) ON DELETE CASCADE,
    session_token VARCHAR(255) UNIQUE NOT NULL,
    ip_address    INET,
    user_agent    TEXT,
    location      JSONB,
    is_active     BOOLEAN DEFAULT true,
    expires_at    TIMESTAMPTZ NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE INDEX idx_user_sessions_user_id ON user_sessions(user_id);
