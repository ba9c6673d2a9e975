-- Benchmarks only: every tenant without quiet hours or cooldown, so every call is texted at once.
INSERT INTO conv_settings (tenant_id, quiet_hours_start, quiet_hours_end, quiet_hours_policy, cooldown_minutes)
SELECT id, NULL, NULL, 'delay', 0 FROM tenants
ON CONFLICT (tenant_id) DO UPDATE SET quiet_hours_start = NULL, quiet_hours_end = NULL, cooldown_minutes = 0
RETURNING tenant_id;
