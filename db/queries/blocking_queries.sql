-- DB hotspots / locking (runbook §7.6): who blocks whom
SELECT blocked.pid AS blocked_pid, blocked.query AS blocked_query,
       blocking.pid AS blocking_pid, blocking.query AS blocking_query,
       now() - blocked.query_start AS waiting_for
FROM pg_stat_activity blocked
JOIN pg_locks bl ON bl.pid = blocked.pid AND NOT bl.granted
JOIN pg_locks kl ON kl.locktype = bl.locktype AND kl.database IS NOT DISTINCT FROM bl.database
  AND kl.relation IS NOT DISTINCT FROM bl.relation AND kl.transactionid IS NOT DISTINCT FROM bl.transactionid
  AND kl.pid <> bl.pid AND kl.granted
JOIN pg_stat_activity blocking ON blocking.pid = kl.pid;
