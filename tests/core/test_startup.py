"""What start-up built is kept out of the garbage collector's full passes while the app runs."""

from __future__ import annotations

import gc

from app.core.config import Settings
from tests.conftest import running_app


async def test_the_objects_built_at_startup_are_frozen_until_shutdown(settings: Settings) -> None:
    async with running_app(settings) as (app, client):
        assert (await client.get("/livez")).status_code == 200
        frozen = gc.get_freeze_count()
        # The app and what it holds: routes, models, settings, clients, the modules loaded.
        assert frozen > 10_000
        # A full pass leaves them where they are.
        gc.collect()
        assert gc.get_freeze_count() == frozen
    # Back to the collector once the app has stopped: a stopped app can be collected.
    assert gc.get_freeze_count() == 0
