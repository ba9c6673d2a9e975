"""SQL billing publishes for other modules' benchmarked statements (ADR 0008), like identity's views,
conversations' `OPTED_OUT_SQL` and messaging's `LANDLINE_SQL`: the owner's rule in the owner's file.

`ENTITLED_SQL` is the entitlement as the sending decision reads it, one primary-key lookup inside the
planning query (`{tenant}`: the statement's tenant id expression). True while the tenant's row says
texting is on and has not lapsed (`texting_enabled_until`: the end of a grace period or of our
trial, exact without waiting for the periodic expiry); true for a tenant without a row (a tenant from
before billing, or one whose trial row is being written) — billing fails open, never silently mutes a
tenant it knows nothing about. Whether billing is enabled at all is the caller's setting to apply.
"""

ENTITLED_SQL = """coalesce((
    SELECT b.texting_enabled AND (b.texting_enabled_until IS NULL OR b.texting_enabled_until > now())
    FROM billing_accounts b WHERE b.tenant_id = {tenant}
), true)"""
