-- updated_at maintenance and the audit trail of sensitive tables.
--
-- set_updated_at stamps updated_at with the transaction's time (now(), like the column
-- defaults) on every UPDATE of a table that has the column, so no caller can forget it.
--
-- audit_row_change writes one audit_log row per inserted, updated or deleted row of the
-- sensitive tables:
--   * old_values / new_values are the whole row as JSONB (NULL where there is no such image),
--     with secret columns (password_hash, secret_key, backup_codes, encrypted_credentials,
--     card_token) replaced by the string '[REDACTED]' when they hold a value. A NULL secret
--     stays NULL: it reveals nothing, and shows that no secret is set.
--   * An UPDATE that changes nothing but updated_at writes no audit row: the trail records
--     changes, and an application that saves an unchanged row must not flood it. The
--     comparison is made on the raw images, so a changed secret is still recorded.
--   * Who and from where come from the transaction-local settings that kit.db.audit_context
--     and kit.db.acting_for set: actor_id is dwaybank.user_id as given, and changed_by is the
--     same id only when it names a users row (NULL for any other actor, so a service actor
--     never breaks the write on the foreign key). ip_address is dwaybank.ip, or NULL when it is
--     not a valid address (a malformed client address must not fail a customer's write), and
--     user_agent is dwaybank.user_agent. An empty setting means unknown.
--   * It runs as its owner (SECURITY DEFINER, pinned search_path) so that a transaction acting
--     for a user, which may not write audit_log directly, still records its changes. The
--     owner is the migrator, a superuser, which row-level security never restricts.
-- Archiving a transaction (archive_transactions) is a DELETE and is recorded as one.

CREATE FUNCTION set_updated_at() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE TRIGGER users_set_updated_at BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER connected_wallets_set_updated_at BEFORE UPDATE ON connected_wallets
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER wallet_balances_set_updated_at BEFORE UPDATE ON wallet_balances
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER transactions_set_updated_at BEFORE UPDATE ON transactions
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER user_risk_profiles_set_updated_at BEFORE UPDATE ON user_risk_profiles
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE FUNCTION audit_row_change() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    secret_columns CONSTANT text[] := ARRAY[
        'password_hash', 'secret_key', 'backup_codes', 'encrypted_credentials', 'card_token'
    ];
    old_image jsonb;
    new_image jsonb;
    secret_column text;
    actor uuid := NULLIF(current_setting('dwaybank.user_id', true), '')::uuid;
    actor_user uuid;
    ip_text text := NULLIF(current_setting('dwaybank.ip', true), '');
    ip inet;
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        old_image := to_jsonb(OLD);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        new_image := to_jsonb(NEW);
    END IF;
    IF TG_OP = 'UPDATE' AND (old_image - 'updated_at') = (new_image - 'updated_at') THEN
        RETURN NULL;
    END IF;

    -- jsonb_typeof is NULL, so nothing is masked, when there is no image or no such column.
    FOREACH secret_column IN ARRAY secret_columns LOOP
        IF jsonb_typeof(old_image -> secret_column) <> 'null' THEN
            old_image := jsonb_set(old_image, ARRAY[secret_column], '"[REDACTED]"');
        END IF;
        IF jsonb_typeof(new_image -> secret_column) <> 'null' THEN
            new_image := jsonb_set(new_image, ARRAY[secret_column], '"[REDACTED]"');
        END IF;
    END LOOP;

    IF actor IS NOT NULL THEN
        SELECT u.id INTO actor_user FROM users u WHERE u.id = actor;
    END IF;
    IF ip_text IS NOT NULL THEN
        BEGIN
            ip := ip_text::inet;
        EXCEPTION
            WHEN invalid_text_representation THEN
                ip := NULL;
        END;
    END IF;

    INSERT INTO audit_log (
        table_name, record_id, action, old_values, new_values,
        changed_by, actor_id, ip_address, user_agent
    ) VALUES (
        TG_TABLE_NAME, (coalesce(new_image, old_image) ->> 'id')::uuid, TG_OP,
        old_image, new_image,
        actor_user, actor, ip, NULLIF(current_setting('dwaybank.user_agent', true), '')
    );
    RETURN NULL;
END
$$;

-- Trigger functions are never called directly; nobody needs EXECUTE on a SECURITY DEFINER one.
REVOKE ALL ON FUNCTION audit_row_change() FROM PUBLIC;

CREATE TRIGGER users_audit AFTER INSERT OR UPDATE OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION audit_row_change();
CREATE TRIGGER user_mfa_audit AFTER INSERT OR UPDATE OR DELETE ON user_mfa
    FOR EACH ROW EXECUTE FUNCTION audit_row_change();
CREATE TRIGGER connected_wallets_audit AFTER INSERT OR UPDATE OR DELETE ON connected_wallets
    FOR EACH ROW EXECUTE FUNCTION audit_row_change();
CREATE TRIGGER payment_cards_audit AFTER INSERT OR UPDATE OR DELETE ON payment_cards
    FOR EACH ROW EXECUTE FUNCTION audit_row_change();
CREATE TRIGGER user_risk_profiles_audit AFTER INSERT OR UPDATE OR DELETE ON user_risk_profiles
    FOR EACH ROW EXECUTE FUNCTION audit_row_change();
CREATE TRIGGER compliance_records_audit AFTER INSERT OR UPDATE OR DELETE ON compliance_records
    FOR EACH ROW EXECUTE FUNCTION audit_row_change();
CREATE TRIGGER transactions_audit AFTER INSERT OR UPDATE OR DELETE ON transactions
    FOR EACH ROW EXECUTE FUNCTION audit_row_change();
