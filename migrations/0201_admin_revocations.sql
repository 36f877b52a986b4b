-- An administrator may end a user's refresh families (the admin surface's lock and "end every
-- session"): one more revocation reason.
ALTER TABLE auth_refresh_families DROP CONSTRAINT auth_refresh_families_revoked_reason_check;
ALTER TABLE auth_refresh_families ADD CONSTRAINT auth_refresh_families_revoked_reason_check
    CHECK (revoked_reason IN (
        'logout', 'reuse_detected', 'password_changed', 'password_reset', 'session_revoked',
        'client_revoked', 'step_up', 'code_replayed', 'admin'
    ));
