-- The batch check of 0100 without its LIMIT 1. With LIMIT 1 the planner prefers the plan that
-- yields a first row soonest, and for the FULL JOIN of implied and recorded changes that was a
-- sequential scan of all of balance_changes, filtered to this batch: the check at every COMMIT
-- grew with the ledger's history (5 ms at 100,000 rows). Without it the batch's rows are read
-- through the primary key. `SELECT ... INTO` keeps the first offending row either way, and
-- there is none unless the batch is refused.

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
     WHERE i.balance_id IS NULL OR r.balance_id IS NULL OR b.balance_id IS NULL
        OR i.currency <> i.other_currency OR i.currency <> b.currency
        OR (i.credit, i.debit, i.inflight_credit, i.inflight_debit)
           <> (r.credit, r.debit, r.inflight_credit, r.inflight_debit);
    IF FOUND THEN
        RAISE EXCEPTION 'ledger batch %: balance % changed other than its transactions imply (balance currency %, transaction currencies % / %)',
            NEW.batch_id, bad.balance_id, bad.balance_currency, bad.currency, bad.other_currency
            USING ERRCODE = 'check_violation';
    END IF;

    SELECT b.currency, sum(r.credit - r.debit) AS main, sum(r.inflight_credit - r.inflight_debit) AS held
      INTO bad
      FROM ledger.balance_changes r JOIN ledger.balances b USING (balance_id)
     WHERE r.batch_id = NEW.batch_id
     GROUP BY b.currency
    HAVING sum(r.credit - r.debit) <> 0 OR sum(r.inflight_credit - r.inflight_debit) <> 0;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger batch % does not net to zero in % (main %, inflight %)',
            NEW.batch_id, bad.currency, bad.main, bad.held
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END
$$;
