"""Scheduling's reactions to domain events.

None yet: scheduling publishes `booking.held`, `booking.confirmed`, `booking.cancelled`,
`booking.rescheduled` and `hold.expired`, and reacts to nothing. Booking by SMS (a caller's reply
picking an offered slot) will subscribe here to `message.received`.
"""
