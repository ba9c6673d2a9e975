"""Scheduling's reactions to domain events.

None: scheduling publishes `booking.held`, `booking.confirmed`, `booking.cancelled`,
`booking.rescheduled` and `hold.expired`, and reacts to nothing. Booking by SMS lives with the
conversation it happens in (`nmc.conversations.booking_by_sms`) and calls scheduling's functions.
"""
