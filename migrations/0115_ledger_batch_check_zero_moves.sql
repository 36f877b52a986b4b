-- A batch whose transactions move nothing on some balance: a split leg whose share rounds down
-- to zero minor units (1 % of 1 unit, 5 % of 10) is its own APPLIED child of amount 0, as in
-- Blnk, and touches its two balances by nothing. The engine records only balances whose
-- figures changed, so the check of 0107 found the leg's balances implied but not recorded
-- and refused the batch: the split failed with a 500 (the engine isolated it; nothing was
-- written). The check now asks for a recorded change only where the transactions imply a
-- non-zero one; everything else is as before (every implied balance exists and is in the
-- transactions' currency, every recorded change is implied, figure by figure).
--
-- CREATE OR REPLACE resets the function's settings, so 0113's are set again below.

CREATE OR REPLACE FUNCTION ledger.check_batch_balanced() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    bad RECORD;
BEGIN
    WITH moves AS (
        SELECT t.source AS balance_id, t.currency,
               0::numeric AS credit,
               CASE WHEN t.effect IN ('applied', 'commit') THEN t.precise_amount ELSE 0 END AS debit,
               0::numeric AS inflight_credit,
               CASE t.effect WHEN 'inflight' THEN t.precise_amount
                             WHEN 'commit' THEN -t.precise_amount
                             WHEN 'void' THEN -t.precise_amount ELSE 0 END AS inflight_debit
          FROM ledger.transactions t
         WHERE t.batch_id = NEW.batch_id AND t.effect <> 'none'
        UNION ALL
        SELECT t.destination, t.currency,
               CASE WHEN t.effect IN ('applied', 'commit') THEN t.precise_amount ELSE 0 END,
               0,
               CASE t.effect WHEN 'inflight' THEN t.precise_amount
                             WHEN 'commit' THEN -t.precise_amount
                             WHEN 'void' THEN -t.precise_amount ELSE 0 END,
               0
          FROM ledger.transactions t
         WHERE t.batch_id = NEW.batch_id AND t.effect <> 'none'
    ), implied AS (
        SELECT balance_id, min(currency) AS currency, max(currency) AS other_currency,
               sum(credit) AS credit, sum(debit) AS debit,
               sum(inflight_credit) AS inflight_credit, sum(inflight_debit) AS inflight_debit
          FROM moves GROUP BY balance_id
    ), recorded AS (
        SELECT * FROM ledger.balance_changes WHERE batch_id = NEW.batch_id
    )
    SELECT coalesce(i.balance_id, r.balance_id) AS balance_id, b.currency AS balance_currency,
           i.currency, i.other_currency
      INTO bad
      FROM implied i
      FULL JOIN recorded r ON r.balance_id = i.balance_id
      LEFT JOIN ledger.balances b ON b.balance_id = coalesce(i.balance_id, r.balance_id)
     WHERE i.balance_id IS NULL OR b.balance_id IS NULL
        OR (r.balance_id IS NULL
            AND (i.credit, i.debit, i.inflight_credit, i.inflight_debit) <> (0, 0, 0, 0))
        OR i.currency <> i.other_currency OR i.currency <> b.currency
        OR (i.credit, i.debit, i.inflight_credit, i.inflight_debit)
           <> (r.credit, r.debit, r.inflight_credit, r.inflight_debit);
    IF FOUND THEN
        RAISE EXCEPTION 'ledger batch %: balance % changed other than its transactions imply (balance currency %, transaction currencies % / %)',
            NEW.batch_id, bad.balance_id, bad.balance_currency, bad.currency, bad.other_currency
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END
$$;


ALTER FUNCTION ledger.check_batch_balanced()
    SET plan_cache_mode = force_generic_plan
    SET enable_seqscan = off;
