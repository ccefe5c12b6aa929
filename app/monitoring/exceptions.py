"""Domain errors of the monitoring domain, each mapped to an HTTP answer by the core handler."""

from __future__ import annotations

from app.core.errors import Conflict, NotFound


class WebhookNotFound(NotFound):
    code = "webhook_not_found"


class DeliveryNotFound(NotFound):
    code = "delivery_not_found"


class WebhookNotActive(Conflict):
    """A redelivery was asked of a webhook that is disabled or no longer registered."""

    code = "webhook_not_active"
