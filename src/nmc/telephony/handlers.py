"""Telephony's reactions to domain events: none yet (it publishes `call.missed`)."""
