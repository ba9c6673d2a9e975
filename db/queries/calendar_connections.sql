-- Calendar connections (runbook §7.4): status, last successful sync, last error, next poll, push channel.
SELECT c.id, c.tenant_id, c.provider, c.resource_id, c.calendar_id, c.status,
       c.last_synced_at, c.last_sync_attempt_at, c.next_poll_at, c.consecutive_failures,
       c.last_error, c.last_error_at, c.watch_error,
       ch.expires_at AS channel_expires_at,
       (SELECT count(*) FROM calendar_event_links l WHERE l.connection_id = c.id AND l.state = 'failed')
           AS failed_write_backs
FROM calendar_connections c
LEFT JOIN LATERAL (
    SELECT max(expires_at) AS expires_at FROM calendar_channels
    WHERE connection_id = c.id AND stopped_at IS NULL
) AS ch ON true
ORDER BY c.status <> 'active' DESC, c.last_synced_at NULLS FIRST;
