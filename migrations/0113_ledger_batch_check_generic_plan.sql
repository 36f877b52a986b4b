-- The COMMIT check of every batch (0107) runs one query with the batch id as its parameter.
-- Connections plan every statement for its own parameters (`kit.db.SERVER_SETTINGS`:
-- plan_cache_mode = force_custom_plan), and the check inherited that: it was planned anew at
-- every COMMIT, ~0.25 ms of planning for ~0.15 ms of execution on a batch of 16 transfers
-- (EXPLAIN ANALYZE), the size of batch an HTTP load of single transactions makes.
--
-- The check now keeps one generic plan per connection, planned with sequential scans off.
-- Every table it reads is reached by the batch id or the balance id through an index
-- (transactions_batch, balance_changes_pkey, balances_pkey), so the plan is the same whatever
-- the statistics say: statistics taken while the ledger was small, or never refreshed on a
-- server whose autovacuum is off, cannot turn it into a scan of the ledger's history (the
-- hazard that made connections plan every statement; with statistics claiming three batches,
-- the generic plan scanned all balances unless sequential scans are off). Measured on the
-- engine in-process, PostgreSQL's CPU per posting: 155 -> 128 us at batches of 16, 63 -> 59 us
-- at 512, 1,230 -> 970 us at one transfer per batch.
--
-- A later CREATE OR REPLACE of the function resets these settings: repeat them there.

ALTER FUNCTION ledger.check_batch_balanced()
    SET plan_cache_mode = force_generic_plan
    SET enable_seqscan = off;
