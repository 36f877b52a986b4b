-- One open one-time code per user and purpose (reset, verification, enrolment): issuing a code
-- ends the open one under a per-user advisory lock, and the database now holds that too. Codes
-- left open beside a newer one (two requests at once, before that lock) are ended first.
UPDATE auth_codes AS older SET consumed_at = now()
WHERE older.consumed_at IS NULL AND EXISTS (
    SELECT 1 FROM auth_codes AS newer
    WHERE newer.user_id = older.user_id AND newer.purpose = older.purpose
      AND newer.consumed_at IS NULL
      AND (newer.created_at, newer.id) > (older.created_at, older.id)
);
DROP INDEX idx_auth_codes_open;
CREATE UNIQUE INDEX idx_auth_codes_open ON auth_codes(user_id, purpose) WHERE consumed_at IS NULL;
