-- Privileges and row-level security.
--
-- A transaction acting for a user (kit.db.acting_for: dwaybank.user_id set, then SET LOCAL
-- ROLE dwaybank_user) sees and writes only that user's rows; PostgreSQL enforces it, so a
-- query that forgets its WHERE clause still cannot reach another customer's data. Every
-- policy compares with NULLIF(current_setting('dwaybank.user_id', true), '')::uuid, which is
-- NULL (and so matches nothing) when no user is set.
--
--   * users by id; user_mfa, user_sessions, connected_wallets, transactions,
--     user_risk_profiles, compliance_records and daily_user_stats by user_id; wallet_balances
--     and payment_cards through their wallet's user_id.
--   * Writes are checked too (WITH CHECK), so a user can neither insert a row for another
--     user nor move a row to one. A transaction or a compliance record may moreover only
--     point at the user's own wallet or transaction.
--   * audit_log and transactions_archive are read-only for a user: their own audit rows
--     (changed_by) and their own archived transactions. Audit rows are written by the audit
--     trigger, which runs as its owner.
--   * event_store and event_snapshots are not owned by a user: a user-acting transaction may
--     append events (INSERT) but read none.
--   * FORCE makes the policies apply to the tables' owner as well; superusers and BYPASSRLS
--     roles are exempt by PostgreSQL's rules, whatever is written here.
--
-- dwaybank_service bypasses row-level security (BYPASSRLS). Because that attribute is not
-- inherited by roles that are merely granted dwaybank_service, each table also has a policy
-- admitting every row to dwaybank_service and its members. audit_log is append-only for both
-- roles: no UPDATE or DELETE is granted (the ON DELETE SET NULL of changed_by runs as the
-- table's owner and is unaffected).

-- ------------------------------------------------------------------ privileges

GRANT SELECT, INSERT, UPDATE, DELETE ON
    users, user_mfa, user_sessions,
    connected_wallets, wallet_balances, payment_cards,
    transactions, transactions_archive,
    user_risk_profiles, compliance_records,
    event_store, event_snapshots, daily_user_stats
    TO dwaybank_service;
GRANT SELECT, INSERT ON audit_log TO dwaybank_service;
GRANT USAGE, SELECT ON SEQUENCE event_store_sequence_number_seq TO dwaybank_service;

GRANT SELECT, INSERT, UPDATE, DELETE ON
    users, user_mfa, user_sessions,
    connected_wallets, wallet_balances, payment_cards,
    transactions,
    user_risk_profiles, compliance_records,
    daily_user_stats
    TO dwaybank_user;
GRANT SELECT ON audit_log, transactions_archive TO dwaybank_user;
GRANT INSERT ON event_store TO dwaybank_user;
GRANT USAGE ON SEQUENCE event_store_sequence_number_seq TO dwaybank_user;

-- ------------------------------------------------------------------ tables keyed by the user

ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE users FORCE ROW LEVEL SECURITY;
CREATE POLICY users_own_rows ON users FOR ALL TO dwaybank_user
    USING (id = NULLIF(current_setting('dwaybank.user_id', true), '')::uuid)
    WITH CHECK (id = NULLIF(current_setting('dwaybank.user_id', true), '')::uuid);
CREATE POLICY users_service ON users FOR ALL TO dwaybank_service
    USING (true) WITH CHECK (true);

ALTER TABLE user_mfa ENABLE ROW LEVEL SECURITY;
ALTER TABLE user_mfa FORCE ROW LEVEL SECURITY;
CREATE POLICY user_mfa_own_rows ON user_mfa FOR ALL TO dwaybank_user
    USING (user_id = NULLIF(current_setting('dwaybank.user_id', true), '')::uuid)
    WITH CHECK (user_id = NULLIF(current_setting('dwaybank.user_id', true), '')::uuid);
CREATE POLICY user_mfa_service ON user_mfa FOR ALL TO dwaybank_service
    USING (true) WITH CHECK (true);

ALTER TABLE user_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE user_sessions FORCE ROW LEVEL SECURITY;
CREATE POLICY user_sessions_own_rows ON user_sessions FOR ALL TO dwaybank_user
    USING (user_id = NULLIF(current_setting('dwaybank.user_id', true), '')::uuid)
    WITH CHECK (user_id = NULLIF(current_setting('dwaybank.user_id', true), '')::uuid);
CREATE POLICY user_sessions_service ON user_sessions FOR ALL TO dwaybank_service
    USING (true) WITH CHECK (true);

ALTER TABLE connected_wallets ENABLE ROW LEVEL SECURITY;
ALTER TABLE connected_wallets FORCE ROW LEVEL SECURITY;
CREATE POLICY connected_wallets_own_rows ON connected_wallets FOR ALL TO dwaybank_user
    USING (user_id = NULLIF(current_setting('dwaybank.user_id', true), '')::uuid)
    WITH CHECK (user_id = NULLIF(current_setting('dwaybank.user_id', true), '')::uuid);
CREATE POLICY connected_wallets_service ON connected_wallets FOR ALL TO dwaybank_service
    USING (true) WITH CHECK (true);

ALTER TABLE transactions ENABLE ROW LEVEL SECURITY;
ALTER TABLE transactions FORCE ROW LEVEL SECURITY;
CREATE POLICY transactions_own_rows ON transactions FOR ALL TO dwaybank_user
    USING (user_id = NULLIF(current_setting('dwaybank.user_id', true), '')::uuid)
    WITH CHECK (
        user_id = NULLIF(current_setting('dwaybank.user_id', true), '')::uuid
        AND (
            wallet_id IS NULL
            OR EXISTS (
                SELECT 1 FROM connected_wallets w
                WHERE w.id = transactions.wallet_id
                  AND w.user_id = NULLIF(current_setting('dwaybank.user_id', true), '')::uuid
            )
        )
    );
CREATE POLICY transactions_service ON transactions FOR ALL TO dwaybank_service
    USING (true) WITH CHECK (true);

ALTER TABLE user_risk_profiles ENABLE ROW LEVEL SECURITY;
ALTER TABLE user_risk_profiles FORCE ROW LEVEL SECURITY;
CREATE POLICY user_risk_profiles_own_rows ON user_risk_profiles FOR ALL TO dwaybank_user
    USING (user_id = NULLIF(current_setting('dwaybank.user_id', true), '')::uuid)
    WITH CHECK (user_id = NULLIF(current_setting('dwaybank.user_id', true), '')::uuid);
CREATE POLICY user_risk_profiles_service ON user_risk_profiles FOR ALL TO dwaybank_service
    USING (true) WITH CHECK (true);

ALTER TABLE compliance_records ENABLE ROW LEVEL SECURITY;
ALTER TABLE compliance_records FORCE ROW LEVEL SECURITY;
CREATE POLICY compliance_records_own_rows ON compliance_records FOR ALL TO dwaybank_user
    USING (user_id = NULLIF(current_setting('dwaybank.user_id', true), '')::uuid)
    WITH CHECK (
        user_id = NULLIF(current_setting('dwaybank.user_id', true), '')::uuid
        AND (
            transaction_id IS NULL
            OR EXISTS (
                SELECT 1 FROM transactions t
                WHERE t.id = compliance_records.transaction_id
                  AND t.user_id = NULLIF(current_setting('dwaybank.user_id', true), '')::uuid
            )
        )
    );
CREATE POLICY compliance_records_service ON compliance_records FOR ALL TO dwaybank_service
    USING (true) WITH CHECK (true);

ALTER TABLE daily_user_stats ENABLE ROW LEVEL SECURITY;
ALTER TABLE daily_user_stats FORCE ROW LEVEL SECURITY;
CREATE POLICY daily_user_stats_own_rows ON daily_user_stats FOR ALL TO dwaybank_user
    USING (user_id = NULLIF(current_setting('dwaybank.user_id', true), '')::uuid)
    WITH CHECK (user_id = NULLIF(current_setting('dwaybank.user_id', true), '')::uuid);
CREATE POLICY daily_user_stats_service ON daily_user_stats FOR ALL TO dwaybank_service
    USING (true) WITH CHECK (true);

-- ------------------------------------------------------------------ tables keyed by a wallet

-- The wallet lookup is itself subject to connected_wallets' policy, so only the user's own
-- wallets can match.
ALTER TABLE wallet_balances ENABLE ROW LEVEL SECURITY;
ALTER TABLE wallet_balances FORCE ROW LEVEL SECURITY;
CREATE POLICY wallet_balances_own_rows ON wallet_balances FOR ALL TO dwaybank_user
    USING (EXISTS (
        SELECT 1 FROM connected_wallets w
        WHERE w.id = wallet_balances.wallet_id
          AND w.user_id = NULLIF(current_setting('dwaybank.user_id', true), '')::uuid
    ))
    WITH CHECK (EXISTS (
        SELECT 1 FROM connected_wallets w
        WHERE w.id = wallet_balances.wallet_id
          AND w.user_id = NULLIF(current_setting('dwaybank.user_id', true), '')::uuid
    ));
CREATE POLICY wallet_balances_service ON wallet_balances FOR ALL TO dwaybank_service
    USING (true) WITH CHECK (true);

ALTER TABLE payment_cards ENABLE ROW LEVEL SECURITY;
ALTER TABLE payment_cards FORCE ROW LEVEL SECURITY;
CREATE POLICY payment_cards_own_rows ON payment_cards FOR ALL TO dwaybank_user
    USING (EXISTS (
        SELECT 1 FROM connected_wallets w
        WHERE w.id = payment_cards.wallet_id
          AND w.user_id = NULLIF(current_setting('dwaybank.user_id', true), '')::uuid
    ))
    WITH CHECK (EXISTS (
        SELECT 1 FROM connected_wallets w
        WHERE w.id = payment_cards.wallet_id
          AND w.user_id = NULLIF(current_setting('dwaybank.user_id', true), '')::uuid
    ));
CREATE POLICY payment_cards_service ON payment_cards FOR ALL TO dwaybank_service
    USING (true) WITH CHECK (true);

-- ------------------------------------------------------------------ read-only for users

ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_log FORCE ROW LEVEL SECURITY;
CREATE POLICY audit_log_own_rows ON audit_log FOR SELECT TO dwaybank_user
    USING (changed_by = NULLIF(current_setting('dwaybank.user_id', true), '')::uuid);
CREATE POLICY audit_log_service ON audit_log FOR ALL TO dwaybank_service
    USING (true) WITH CHECK (true);

-- Policies on a partitioned table govern access through it; users hold no privilege on the
-- partitions themselves, so the parent is their only way in.
ALTER TABLE transactions_archive ENABLE ROW LEVEL SECURITY;
ALTER TABLE transactions_archive FORCE ROW LEVEL SECURITY;
CREATE POLICY transactions_archive_own_rows ON transactions_archive FOR SELECT TO dwaybank_user
    USING (user_id = NULLIF(current_setting('dwaybank.user_id', true), '')::uuid);
CREATE POLICY transactions_archive_service ON transactions_archive FOR ALL TO dwaybank_service
    USING (true) WITH CHECK (true);
