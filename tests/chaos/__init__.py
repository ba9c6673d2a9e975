"""`just chaos`: the fault suite (issue #10), run against the real processes on a private PostgreSQL."""
