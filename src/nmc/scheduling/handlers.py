"""Scheduling's reactions to domain events.

None: scheduling publishes `booking.held`, `booking.confirmed`, `booking.cancelled`,
`booking.rescheduled` and `hold.expired`, and reacts to nothing. Booking by SMS (`nmc.booking_by_sms`)
holds and books through scheduling's functions (its public face, `nmc.scheduling`).
"""
