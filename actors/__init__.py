"""Ray actors: ledger and user shards, the outbox dispatcher, schedulers; shard routing.

A fixed number of named shard actors each host many per-balance or per-user "virtual actors"
(an asyncio object with a mailbox), so a hot balance or user is serialised without a lock and
without one Ray process per entity. An actor's memory is a cache; PostgreSQL is the record.
"""
