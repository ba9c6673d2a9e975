"""Booking by SMS: a caller books a time by text. `dialog.py` holds the rules (state and intent →
action), `service.py` carries a turn out through scheduling's and conversations' public faces, in one
transaction with the thread's dialog row (`conv_booking_dialogs`) locked. It has no public API of its
own: it reacts to `message.received` and `hold.expired` (`handlers.py`)."""

__all__: list[str] = []
