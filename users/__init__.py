"""User records: profile, preferences, privacy settings, GDPR export and erasure.

Invariants: an email belongs to one user (normalised before it is stored); a user's rows are
visible only to that user (row-level security) or the service role; erasure removes personal
data but keeps what anti-money-laundering law requires to be retained.
"""
