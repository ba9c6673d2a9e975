-- Outbox lag (runbook §12)
SELECT now() - MIN(created_at) AS oldest, COUNT(*) AS pending
FROM outbox_events WHERE dispatched_at IS NULL;
