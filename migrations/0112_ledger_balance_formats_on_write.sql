-- The formats of a balance's identifiers (balance_id, indicator, currency) move from CHECK
-- constraints to a trigger that fires when a row is inserted or one of those columns is
-- written. PostgreSQL evaluates every CHECK of a row on every UPDATE, whatever the UPDATE
-- sets; the engine updates each touched balance's figures once per batch, and the two regular
-- expressions cost ~2.8 us of each such update (measured: 10,000 updates in 48 ms with them,
-- 20 ms without), for columns the update never changes. The trigger below checks exactly the
-- same patterns with the same SQLSTATE (check_violation) and constraint names, so a bad row
-- written with raw SQL is refused as before; an update of the figures alone skips it.

ALTER TABLE ledger.balances
    DROP CONSTRAINT balances_balance_id_check,
    DROP CONSTRAINT balances_indicator_check,
    DROP CONSTRAINT balances_currency_check;

CREATE FUNCTION ledger.check_balance_formats() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.balance_id IS NULL OR NEW.balance_id !~ '^bln_[0-9a-f-]{36}$' THEN
        RAISE EXCEPTION 'balance id % is not bln_ followed by a UUID', NEW.balance_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'balances_balance_id_check';
    END IF;
    IF NEW.indicator IS NOT NULL AND NEW.indicator !~ '^@\S{1,254}$' THEN
        RAISE EXCEPTION 'indicator % is not @ followed by 1-254 non-space characters', NEW.indicator
            USING ERRCODE = 'check_violation', CONSTRAINT = 'balances_indicator_check';
    END IF;
    IF NEW.currency IS NULL OR NEW.currency !~ '^[A-Za-z0-9_.:-]{1,32}$' THEN
        RAISE EXCEPTION 'currency % is not 1-32 of [A-Za-z0-9_.:-]', NEW.currency
            USING ERRCODE = 'check_violation', CONSTRAINT = 'balances_currency_check';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER balances_formats
    BEFORE INSERT OR UPDATE OF balance_id, indicator, currency ON ledger.balances
    FOR EACH ROW EXECUTE FUNCTION ledger.check_balance_formats();
