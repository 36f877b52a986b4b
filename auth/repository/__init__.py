"""Every SQL statement of the identity domain, one module per group of tables.

Repositories take a connection inside the caller's transaction, use `$n` parameters only, and
return rows or frozen records; they never commit.
"""
