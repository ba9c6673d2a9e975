-- DB hotspots / locking (runbook §7.6): who blocks whom, from pg_blocking_pids() — Postgres' own
-- answer (exact: the lock a session waits for, held or queued ahead by another). Advisory locks only
-- show when someone really waits on the same key. One row per (blocked, blocking) pair, longest wait first.
SELECT blocked.pid AS blocked_pid,
       blocked.usename AS blocked_user,
       blocked.application_name AS blocked_application,
       blocked.wait_event_type || ':' || blocked.wait_event AS blocked_waits_for,
       now() - blocked.query_start AS waiting_for,
       left(blocked.query, 500) AS blocked_query,
       blocking.pid AS blocking_pid,
       blocking.usename AS blocking_user,
       blocking.application_name AS blocking_application,
       blocking.state AS blocking_state,
       now() - blocking.xact_start AS blocking_transaction_age,
       left(blocking.query, 500) AS blocking_query
FROM pg_stat_activity blocked
CROSS JOIN LATERAL unnest(pg_blocking_pids(blocked.pid)) AS b(pid)
JOIN pg_stat_activity blocking ON blocking.pid = b.pid
WHERE blocked.pid <> pg_backend_pid()
ORDER BY waiting_for DESC NULLS LAST, blocked.pid, blocking.pid;
