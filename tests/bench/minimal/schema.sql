-- The minimal pipeline's own tables (PgQueuer's are installed beside them by stack.py).
CREATE TABLE calls (
    call_sid text PRIMARY KEY,
    caller text NOT NULL,
    tenant_number text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE outbox (
    id uuid PRIMARY KEY,
    call_sid text NOT NULL UNIQUE REFERENCES calls (call_sid),
    caller text NOT NULL,
    tenant_number text NOT NULL,
    state text NOT NULL DEFAULT 'pending',  -- pending → sending → accepted
    attempts int NOT NULL DEFAULT 0,
    claimed_at timestamptz,
    twilio_sid text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_unsent ON outbox (created_at) WHERE state <> 'accepted';
