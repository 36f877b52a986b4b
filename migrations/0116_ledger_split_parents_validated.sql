-- Validates 0114's CHECKs on the stored rows (they met the stricter ones these replaced), in
-- a transaction of its own: VALIDATE CONSTRAINT scans the history under SHARE UPDATE
-- EXCLUSIVE, which lets inserts and updates go on, where 0114's ALTER TABLE held an exclusive
-- lock only for as long as it took to swap the definitions.

ALTER TABLE ledger.transactions
    VALIDATE CONSTRAINT transactions_source_check,
    VALIDATE CONSTRAINT transactions_destination_check;
