-- Roles and schemas.
--
-- Two roles carry the row-level-security contract of kit/db.py:
--
--   dwaybank_user     NOLOGIN, subject to row-level security. kit.db.acting_for switches a
--                     transaction to it (SET LOCAL ROLE) after setting dwaybank.user_id, so
--                     PostgreSQL itself limits that transaction to one user's rows.
--   dwaybank_service  NOLOGIN, BYPASSRLS: the service role. A login role that is granted it
--                     acts for the bank as a whole. Because role attributes such as BYPASSRLS
--                     are not inherited through membership, 0008 also gives this role policies
--                     that admit every row, so its members see every row either way.
--
-- dwaybank_service is made a member of dwaybank_user so that a login role holding the service
-- role may SET ROLE dwaybank_user (acting_for); membership never flows the other way, and
-- PostgreSQL refuses the cycle that would let a user-acting transaction gain the service role.
--
-- Roles are cluster-global while this file runs once per database, and two databases on one
-- server may migrate at the same moment. Every role statement therefore tolerates the role or
-- the membership already existing, or being created concurrently (duplicate_object when the
-- other creator committed first, unique_violation when both raced on the catalog index).
-- Creating a BYPASSRLS role needs a superuser; the migrator is one in development and tests.

DO $$
BEGIN
    CREATE ROLE dwaybank_user NOLOGIN NOBYPASSRLS;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

DO $$
BEGIN
    CREATE ROLE dwaybank_service NOLOGIN BYPASSRLS;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

-- A pre-existing role with the wrong attributes would silently weaken isolation: refuse a user
-- role that bypasses row-level security, and give the service role the attribute it needs.
DO $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM pg_roles
        WHERE rolname = 'dwaybank_user' AND (rolsuper OR rolbypassrls)
    ) THEN
        RAISE EXCEPTION 'role dwaybank_user must not be a superuser nor bypass row-level security';
    END IF;
    IF NOT EXISTS (
        SELECT 1 FROM pg_roles WHERE rolname = 'dwaybank_service' AND rolbypassrls
    ) THEN
        ALTER ROLE dwaybank_service BYPASSRLS;
    END IF;
END
$$;

DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1
        FROM pg_auth_members m
        JOIN pg_roles granted_role ON granted_role.oid = m.roleid
        JOIN pg_roles member_role ON member_role.oid = m.member
        WHERE granted_role.rolname = 'dwaybank_user'
          AND member_role.rolname = 'dwaybank_service'
    ) THEN
        GRANT dwaybank_user TO dwaybank_service;
    END IF;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

GRANT USAGE ON SCHEMA public TO dwaybank_user, dwaybank_service;

-- The double-entry ledger keeps its own tables apart from the seed's data model; its schema is
-- reserved here so that the name is settled, and it is filled by the ledger's migrations.
CREATE SCHEMA IF NOT EXISTS ledger;
COMMENT ON SCHEMA ledger IS
    'Double-entry ledger (Blnk''s model): its tables, grants and policies come with the ledger''s migrations.';
