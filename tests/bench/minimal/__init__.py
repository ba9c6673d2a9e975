"""The minimal reference pipeline for `just bench first-sms --pipeline minimal` (issue #16): not product code.

A missed call's first SMS with the product's guarantees and nothing else, built from the same
libraries (Litestar on uvicorn/uvloop/httptools, asyncpg, PgQueuer, aiohttp to Twilio), in a database
of its own (`schema.sql`):

- `web.py`: the Twilio-signed dial-status webhook (twilio's RequestValidator), then one transaction:
  the call deduplicated on its CallSid, an outbox row, a PgQueuer job (its NOTIFY wakes the worker);
- `worker.py`: one PgQueuer consumer; per job the outbox row is claimed (`sending`, committed before
  the request, so a crash never sends twice unseen), the Messages request goes to Twilio, the row is
  marked `accepted` with its SID. A row found `sending` again (its worker died mid-request) is looked
  up in Twilio's Messages list before any resend; a lost job is re-enqueued by the sweep.

What it leaves out is what the product adds: templates, guards (quiet hours, opt-outs, cooldown,
circuit, billing), threads, KPIs, the webhook ledger's stored answers, domain events.
"""
