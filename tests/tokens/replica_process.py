"""A replica in a process of its own, for the tests that kill one with SIGKILL mid-refresh.

`python -m tests.tokens.replica_process '<json>'` builds the app from the test settings plus the
JSON's `settings`, runs its lifespan (its monitoring loop too, when the settings enable it), and:
- `"read"`: makes the token read of `branch_id`/`provider` with the `bearer` token, which takes
  the refresh locks exactly as any replica does and then calls the provider;
- `"monitor"`: only lets the monitoring loop lease and refresh what is due.
Then it waits to be killed. It prints `ready` once its lifespan runs.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import httpx

from app.main import create_app
from tests.conftest import bearer, build_settings


async def run(config: dict[str, Any]) -> None:
    settings = build_settings(config["database_url"], **config["settings"])
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        print("ready", flush=True)
        if config["mode"] == "read":
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://replica") as client:
                await client.get(
                    f"/token-management/tokens/{config['branch_id']}",
                    params={"provider": config["provider"]},
                    headers=bearer(config["bearer"]),
                )
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(run(json.loads(sys.argv[1])))
