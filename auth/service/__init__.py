"""Identity business rules: registration, login, tokens, MFA, recovery, OAuth.

Each function takes `conn` (inside the edge's transaction) and the `AuthDependencies`, then
keyword-only arguments; none commits, none knows HTTP or Ray. Refusals that must still commit
(a failed login's audit row and counter, a detected refresh-token reuse) come back as an
`Outcome` for the edge to raise after the commit.
"""
