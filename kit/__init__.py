"""Domain-free plumbing shared by every package.

Settings, the PostgreSQL pool and migrations runner, the Redis client, the error tree, money,
ids, the clock, envelope encryption, logging and metrics, and the embedded servers. Nothing here
knows about users, ledgers or HTTP, and nothing here imports another package of ours.

Invariants: money is an `int` of minor units with a precision, never a float; every error is an
`AppError` that pickles; time is aware UTC; nothing does I/O at import time.
"""
