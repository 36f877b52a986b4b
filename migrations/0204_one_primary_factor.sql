-- One primary second factor per user, and only an enabled one. Confirming and removing a factor
-- decide the primary one under a per-user advisory lock (auth/repository/mfa.py); the database
-- now holds the rule too. A factor not yet confirmed is never primary (a CHECK), so the unique
-- index needs no more than is_primary in its predicate.
--
-- Rows written before (two confirmations at once both primary, a removed primary leaving none,
-- a pending factor marked primary) are repaired first, oldest meaning (created_at, id):
--   1. a factor that is not enabled is primary no more;
--   2. of a user's primaries, the oldest stays and the others are cleared;
--   3. a user with enabled factors but no primary gets the oldest enabled one.
UPDATE user_mfa SET is_primary = false WHERE is_primary AND is_enabled IS NOT TRUE;

UPDATE user_mfa AS later SET is_primary = false
WHERE later.is_primary AND EXISTS (
    SELECT 1 FROM user_mfa AS earlier
    WHERE earlier.user_id = later.user_id AND earlier.is_primary
      AND (earlier.created_at, earlier.id) < (later.created_at, later.id)
);

UPDATE user_mfa AS oldest SET is_primary = true
WHERE oldest.id IN (
    SELECT DISTINCT ON (user_id) id FROM user_mfa
    WHERE is_enabled AND user_id IS NOT NULL
    ORDER BY user_id, created_at, id
) AND NOT EXISTS (
    SELECT 1 FROM user_mfa AS primary_factor
    WHERE primary_factor.user_id = oldest.user_id AND primary_factor.is_primary
);

-- A primary factor is an enabled one.
ALTER TABLE user_mfa ADD CONSTRAINT user_mfa_primary_is_enabled
    CHECK (is_primary IS NOT TRUE OR is_enabled IS TRUE);
CREATE UNIQUE INDEX idx_user_mfa_one_primary ON user_mfa(user_id) WHERE is_primary;
