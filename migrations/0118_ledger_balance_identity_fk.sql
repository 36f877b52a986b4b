-- A balance's identity_id names a stored identity, or is NULL (no identity), as in Blnk, whose
-- balances table declares `identity_id TEXT REFERENCES blnk.identity(identity_id)`. Until now
-- only Python kept the link, and not everywhere: POST /balances stored whatever identity_id it
-- was given, PUT /balances/{id}/identity likewise, and a balance created for an identity while
-- that identity was being deleted could outlive it (the deletion's look for balances cannot
-- see an uncommitted balance, and nothing locked the identity the balance named).
--
-- The key closes all three. Writing a balance that names an identity locks that identity
-- (FOR KEY SHARE) until the balance commits, so a deletion and a balance naming the identity
-- are ordered: either the deletion waits for the balance, then finds it and is refused (409
-- GEN_CONFLICT), or the balance waits for the deletion and the key refuses it (400
-- BAL_VALIDATION_ERROR). ON DELETE NO ACTION, Blnk's default: the API already refuses to
-- delete an identity that balances belong to, and now PostgreSQL refuses it too. An identity's
-- id never changes (PUT /identities/{id} rewrites its fields only), so ON UPDATE has nothing to
-- follow. The key costs the engine nothing: its updates of a balance's figures leave
-- identity_id alone, and PostgreSQL checks a foreign key on UPDATE only when the key changes.
-- balances_identity_id (0100) already indexes the column for the deletion's check.
--
-- Rows written before the key are repaired first, in this transaction:
--
-- * identity_id '' means no identity (Blnk shows none as ""); it becomes NULL, which is what
--   the API stores for none and what the key lets pass. Nothing is lost.
-- * An identity_id that names no stored identity cannot stay under the key. The balance is
--   taken to have no identity (NULL), as if created without one, and the id it named is kept
--   in ledger.balance_identity_repairs, so nothing is lost and an operator can link the
--   balance again (PUT /balances/{id}/identity) once the identity is known. Refusing the
--   migration instead would stop every start until someone edited rows by hand; making up an
--   identity would invent data. Money is untouched: an identity is who a balance belongs to,
--   and the balance's figures, transactions and ledger stay as they are.
--
-- Both tables are locked first in SHARE ROW EXCLUSIVE mode, the lock ADD FOREIGN KEY takes
-- anyway, so no new dangling id can be written between the repair and the key (a check that
-- then failed would stop the start). Reads go on; writes to both tables wait for this file,
-- which reads ledger.balances twice (the repair and the key's validation).

LOCK TABLE ledger.identities, ledger.balances IN SHARE ROW EXCLUSIVE MODE;

UPDATE ledger.balances SET identity_id = NULL WHERE identity_id = '';

CREATE TABLE ledger.balance_identity_repairs (
    balance_id   TEXT COLLATE "C" PRIMARY KEY REFERENCES ledger.balances (balance_id),
    identity_id  TEXT COLLATE "C" NOT NULL,
    repaired_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

COMMENT ON TABLE ledger.balance_identity_repairs IS
    'Balances whose identity_id named no stored identity when 0118 added the foreign key: the'
    ' id each named before it was set to NULL, for an operator to link the balance again.';

WITH dangling AS (
    UPDATE ledger.balances AS b SET identity_id = NULL
    FROM (
        SELECT balance_id, identity_id FROM ledger.balances AS named
        WHERE identity_id IS NOT NULL
          AND NOT EXISTS (
              SELECT 1 FROM ledger.identities AS i WHERE i.identity_id = named.identity_id
          )
    ) AS old
    WHERE b.balance_id = old.balance_id
    RETURNING b.balance_id, old.identity_id
)
INSERT INTO ledger.balance_identity_repairs (balance_id, identity_id)
SELECT balance_id, identity_id FROM dangling;

ALTER TABLE ledger.balances
    ADD CONSTRAINT balances_identity_id_fkey FOREIGN KEY (identity_id)
        REFERENCES ledger.identities (identity_id) ON UPDATE NO ACTION ON DELETE NO ACTION;

GRANT SELECT ON ledger.balance_identity_repairs TO dwaybank_service;
