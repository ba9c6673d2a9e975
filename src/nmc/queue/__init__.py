"""PgQueuer (worker) and Dramatiq (jobs) wiring."""
