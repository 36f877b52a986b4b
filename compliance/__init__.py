"""KYC workflow and providers, sanctions screening, risk scoring, the document vault.

Invariants: a provider's verdict is recorded in `compliance_records` before it changes a user's
KYC status; documents are envelope-encrypted; screening decisions are reproducible from the
list version and the matching thresholds recorded with them.
"""
