"""Every model module, imported so the metadata (Alembic, tests) knows every table."""

from nmc.conversations import models as conversations_models
from nmc.db import metadata
from nmc.events import models as events_models
from nmc.identity import models as identity_models
from nmc.scheduling import models as scheduling_models
from nmc.telephony import models as telephony_models
from nmc.webhooks import models as webhooks_models

__all__ = [
    "conversations_models",
    "events_models",
    "identity_models",
    "metadata",
    "scheduling_models",
    "telephony_models",
    "webhooks_models",
]
