"""The double-entry ledger in Blnk's model, and its Blnk-compatible HTTP API.

Balances hold `balance = credit_balance - debit_balance` plus the inflight trio; a transaction
moves `precise_amount` minor units from one balance to another. Invariants, checked here in
Python and again in PostgreSQL (the `ledger` schema): every currency sums to zero; an applied
transaction changes exactly two balances by equal and opposite amounts; no balance goes below
its overdraft floor without `allow_overdraft`; inflight commits never exceed the held amount; a
reference is used once and a replay returns the first result.
"""
