-- Outbox stuck / lagging (runbook §7.2 step 1-2): due rows, most attempted first
SELECT id, event_name, attempts, last_error, created_at, available_at
FROM outbox_events
WHERE dispatched_at IS NULL AND available_at < now()
ORDER BY attempts DESC, created_at
LIMIT 100;
