"""Connected wallets, tokenised payment cards, and the wallet transaction API.

A wallet has a ledger balance; spend, receive, transfer, fee and refund map to ledger postings.
Invariants: a wallet's money lives in the ledger, never in a cached column; spending limits are
checked per user in one serialised place before a posting is made; card numbers never touch
this service's storage in the clear.
"""
