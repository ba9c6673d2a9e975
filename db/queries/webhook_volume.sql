-- Webhook dedupe volume by provider (runbook §12)
SELECT provider, COUNT(*) FROM webhook_events
WHERE received_at > now() - interval '1 day'
GROUP BY provider;
