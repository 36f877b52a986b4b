-- The per-user session cap ends the oldest session's refresh families under a reason of its own,
-- told apart from a revocation the user or an administrator asked for: one more reason.
ALTER TABLE auth_refresh_families DROP CONSTRAINT auth_refresh_families_revoked_reason_check;
ALTER TABLE auth_refresh_families ADD CONSTRAINT auth_refresh_families_revoked_reason_check
    CHECK (revoked_reason IN (
        'logout', 'reuse_detected', 'password_changed', 'password_reset', 'session_revoked',
        'client_revoked', 'step_up', 'code_replayed', 'admin', 'session_cap'
    ));
