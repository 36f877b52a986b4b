-- An administrator's lock is recorded apart from `is_active`, so that proving the address of a
-- locked account does not enable it: verification sets `is_active` only while no lock stands,
-- an unlock clears the lock and enables a verified account, and PostgreSQL refuses an account
-- that is both locked and active. Who locked it is in the audit log (`account_locked`). A
-- verified account already disabled could only have been locked (verification enables, only a
-- lock disables), so it is recorded as locked now.
ALTER TABLE users ADD COLUMN locked_at TIMESTAMPTZ;
UPDATE users SET locked_at = now()
WHERE email_verified_at IS NOT NULL AND is_active IS NOT TRUE;
ALTER TABLE users ADD CONSTRAINT users_locked_is_inactive
    CHECK (locked_at IS NULL OR is_active IS NOT TRUE);
