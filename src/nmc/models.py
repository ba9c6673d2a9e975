"""Every model module, imported so the metadata (Alembic, tests) knows every table."""

from nmc.db import metadata
from nmc.events import models as events_models
from nmc.identity import models as identity_models
from nmc.webhooks import models as webhooks_models

__all__ = ["events_models", "identity_models", "metadata", "webhooks_models"]
