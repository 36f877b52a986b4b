-- Retention of events: the dispatcher deletes outbox rows and finished deliveries past their
-- retention (ledger/dispatcher.py). These partial indexes find them oldest first without
-- reading the rows still in use; pending deliveries and undispatched rows are not in them.
CREATE INDEX outbox_dispatched ON ledger.outbox (dispatched_at)
    WHERE dispatched_at IS NOT NULL;
CREATE INDEX webhook_deliveries_delivered ON ledger.webhook_deliveries (delivered_at)
    WHERE status = 'delivered';
CREATE INDEX webhook_deliveries_dead ON ledger.webhook_deliveries (next_attempt_at)
    WHERE status = 'dead';
