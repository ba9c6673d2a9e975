-- Holds about to expire (runbook §12)
SELECT id, resource_id, expires_at
FROM sched_holds WHERE expires_at < now() + interval '5 minutes'
ORDER BY expires_at;
