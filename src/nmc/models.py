"""Every model module, imported so the metadata (Alembic, tests) knows every table."""

from nmc.billing import models as billing_models
from nmc.booking_by_sms import models as booking_by_sms_models
from nmc.calendars import models as calendars_models
from nmc.conversations import models as conversations_models
from nmc.db import metadata
from nmc.events import models as events_models
from nmc.identity import models as identity_models
from nmc.kpis import models as kpis_models
from nmc.messaging import models as messaging_models
from nmc.observability import models as observability_models
from nmc.scheduling import models as scheduling_models
from nmc.telephony import models as telephony_models
from nmc.webhooks import models as webhooks_models

__all__ = [
    "billing_models",
    "booking_by_sms_models",
    "calendars_models",
    "conversations_models",
    "events_models",
    "identity_models",
    "kpis_models",
    "messaging_models",
    "metadata",
    "observability_models",
    "scheduling_models",
    "telephony_models",
    "webhooks_models",
]
