-- Risk profiles, compliance (KYC / AML) records and the audit trail (specification section 2.5).
--
-- Deviations from the specification (see 0002 for those shared by every table):
--   * audit_log.changed_by is ON DELETE SET NULL, so that erasing a user is not blocked by the
--     audit rows of their own actions.
--   * audit_log gains actor_id: the acting id exactly as the transaction declared it
--     (dwaybank.user_id), with no foreign key. changed_by can only name a users row; an actor
--     that is not one (a back-office operator, a scheduled job) would otherwise leave no trace,
--     and actor_id also keeps the pseudonymous id after changed_by is nulled by an erasure.
--   * Indexes on the foreign keys and on the audit trail's lookups (a record's history, an
--     actor's actions, a time range). user_risk_profiles(user_id) stays a plain index, since
--     the specification does not make it unique.
-- compliance_records keeps the specification's plain REFERENCES: a user or a transaction that
-- has compliance records cannot be deleted, because AML records must be retained.

CREATE TABLE user_risk_profiles (
    id                      UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id                 UUID REFERENCES users(id) ON DELETE CASCADE,
    risk_level              VARCHAR(20) DEFAULT 'medium'
                            CHECK (risk_level IN ('low', 'medium', 'high', 'critical')),
    risk_score              INTEGER DEFAULT 50 CHECK (risk_score >= 0 AND risk_score <= 100),
    risk_factors            JSONB DEFAULT '{}',
    spending_limits         JSONB DEFAULT '{"daily": 5000, "weekly": 15000, "monthly": 50000}',
    geographic_restrictions JSONB DEFAULT '{}',
    merchant_restrictions   JSONB DEFAULT '{}',
    last_assessment_at      TIMESTAMPTZ DEFAULT NOW(),
    created_at              TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at              TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE INDEX idx_user_risk_profiles_user_id ON user_risk_profiles(user_id);

CREATE TABLE compliance_records (
    id                 UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id            UUID REFERENCES users(id),
    transaction_id     UUID REFERENCES transactions(id),
    check_type         VARCHAR(50) NOT NULL
                       CHECK (check_type IN ('aml', 'kyc', 'sanctions', 'pep', 'fraud')),
    status             VARCHAR(20) NOT NULL
                       CHECK (status IN ('passed', 'failed', 'flagged', 'manual_review')),
    score              INTEGER,
    details            JSONB,
    external_reference VARCHAR(255),
    checked_at         TIMESTAMPTZ DEFAULT NOW()
);

CREATE INDEX idx_compliance_records_user_id ON compliance_records(user_id);
CREATE INDEX idx_compliance_records_transaction_id ON compliance_records(transaction_id);

CREATE TABLE audit_log (
    id          UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    table_name  VARCHAR(50) NOT NULL,
    record_id   UUID NOT NULL,
    action      VARCHAR(20) NOT NULL CHECK (action IN ('INSERT', 'UPDATE', 'DELETE')),
    old_values  JSONB,
    new_values  JSONB,
    changed_by  UUID REFERENCES users(id) ON DELETE SET NULL,
    actor_id    UUID,
    ip_address  INET,
    user_agent  TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

COMMENT ON COLUMN audit_log.changed_by IS
    'The acting user when it is a users row; NULL for other actors and after an erasure.';
COMMENT ON COLUMN audit_log.actor_id IS
    'The acting id as declared by the transaction (dwaybank.user_id), user or not.';

CREATE INDEX idx_audit_log_record ON audit_log(table_name, record_id);
CREATE INDEX idx_audit_log_changed_by ON audit_log(changed_by);
CREATE INDEX idx_audit_log_actor_id ON audit_log(actor_id);
CREATE INDEX idx_audit_log_created_at ON audit_log(created_at);
