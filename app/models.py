"""Every table, imported in one place so Alembic and the tests see the whole schema."""

from app.admin import models as admin_models
from app.auth import models as auth_models
from app.core.db import Base
from app.monitoring import models as monitoring_models
from app.platforms import models as platforms_models
from app.provider_configs import models as provider_configs_models
from app.tokens import models as tokens_models
from app.usage import models as usage_models
from app.workspaces import models as workspaces_models

__all__ = [
    "Base",
    "admin_models",
    "auth_models",
    "monitoring_models",
    "platforms_models",
    "provider_configs_models",
    "tokens_models",
    "usage_models",
    "workspaces_models",
]
