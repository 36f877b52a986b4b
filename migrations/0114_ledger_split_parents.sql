-- The stored parent of a queued or scheduled split. A split names its balances in its legs:
-- a `sources` split has no `source` and a `destinations` split no `destination`, which Blnk
-- reports as "". 0100 asked every row for both ends (1-255 characters), so PostgreSQL refused
-- the QUEUED or SCHEDULED row of every split that did not skip the queue, and the request
-- failed as a whole (nothing was written). The parent moves nothing (its effect is 'none');
-- its legs' children move the money and carry both ends, as before.
--
-- An end may now be empty only on such a row: effect 'none' and a non-empty list of legs on
-- that side. Every other row still needs both ends, and a row can never have both empty
-- (transactions_not_to_itself). The legs' JSON is tested with CASE, not AND: PostgreSQL does
-- not promise to evaluate AND's operands in order, and jsonb_array_length refuses a non-array.
--
-- The new CHECKs are added NOT VALID: every stored row met the stricter ones they replace, and
-- validating here would scan the whole history under this file's exclusive lock. 0116
-- validates them in its own transaction, under a lock that lets writes go on.

ALTER TABLE ledger.transactions
    DROP CONSTRAINT transactions_source_check,
    DROP CONSTRAINT transactions_destination_check;

ALTER TABLE ledger.transactions
    ADD CONSTRAINT transactions_source_check CHECK (
        length(source) BETWEEN 1 AND 255
        OR (source = '' AND effect = 'none'
            AND CASE WHEN jsonb_typeof(sources) = 'array'
                     THEN jsonb_array_length(sources) > 0 ELSE false END)
    ) NOT VALID,
    ADD CONSTRAINT transactions_destination_check CHECK (
        length(destination) BETWEEN 1 AND 255
        OR (destination = '' AND effect = 'none'
            AND CASE WHEN jsonb_typeof(destinations) = 'array'
                     THEN jsonb_array_length(destinations) > 0 ELSE false END)
    ) NOT VALID;
