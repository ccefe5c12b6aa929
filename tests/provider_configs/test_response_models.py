"""Every answer of /config validates against the response model its route publishes in OpenAPI.

The routes serialize their bodies themselves (one renderer, string pieces), so nothing but this
test keeps those bodies and the published models from drifting apart.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from app.core.config import Settings
from app.provider_configs import schemas
from tests.conftest import TokenFactory, bearer, build_settings, running_app
from tests.provider_configs.conftest import TENANT, find, post_config, provider

DEFAULTS = {
    "map_providers": [
        {"provider_name": "osm", "priority": "secondary", "config_data": {"style": "ünïcode"}}
    ],
    "sms_providers": [
        {"provider_name": "twilio", "api_key": "default-key-123456", "api_secret": "s3cr3t-value"}
    ],
}


def published_models(app: Any, method: str, path: str) -> list[type[BaseModel]]:
    """The pydantic models behind the route's documented 200 answer (one, or the `anyOf`)."""
    response = app.openapi()["paths"][path][method]["responses"]["200"]
    schema = response["content"]["application/json"]["schema"]
    refs: list[str] = [s["$ref"] for s in schema.get("anyOf", [schema])]
    return [getattr(schemas, ref.rsplit("/", 1)[-1]) for ref in refs]


def assert_published(
    app: Any, method: str, path: str, response: httpx.Response, *, model_name: str | None = None
) -> None:
    """The answer validates against the route's published model (`model_name`, of a union)."""
    assert response.status_code == 200, response.text
    models = published_models(app, method, path)
    if model_name is not None:
        models = [m for m in models if m.__name__ == model_name]
    assert len(models) == 1, models
    # extra="forbid": a field the renderer adds but the model lacks is a failure too.
    models[0].model_validate_json(response.content, strict=True, extra="forbid")


DOCUMENT = "/config/{tenant_id}"


@pytest.fixture
async def app_with_defaults(
    settings: Settings,
) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    custom = build_settings(settings.database_url, provider_config_defaults=json.dumps(DEFAULTS))
    async with running_app(custom) as pair:
        yield pair


async def test_every_answer_matches_its_published_model(
    app_with_defaults: tuple[Any, httpx.AsyncClient], make_token: TokenFactory
) -> None:
    app, client = app_with_defaults
    editor = bearer(make_token([TENANT], roles=["service"], sub="alice"))
    service = bearer(make_token([TENANT], roles=["service"], sub="billing"))

    # Defaults only (nothing stored), masked, revealed and one type.
    assert_published(app, "get", DOCUMENT, await client.get(f"/config/{TENANT}", headers=editor))
    revealed = await client.get(f"/config/{TENANT}?include_secrets=true", headers=service)
    assert_published(app, "get", DOCUMENT, revealed)
    assert find(revealed.json(), "sms", "twilio")["api_secret"] == "s3cr3t-value"
    one_type = await client.get(f"/config/{TENANT}?provider_type=sms", headers=editor)
    assert_published(app, "get", DOCUMENT, one_type)

    # The write answers.
    written = await post_config(
        client,
        editor,
        map=[provider("google", api_key="key-abcdefgh1234", config_data={"zoom": 3})],
        sms=[provider("vonage", enabled=False, api_secret="short")],
        change_reason="first",
    )
    assert_published(app, "post", DOCUMENT, written)
    updated = await post_config(client, editor, map=[provider("google", config_data={"zoom": 4})])
    assert_published(app, "post", DOCUMENT, updated)
    config_id = find(updated.json(), "map", "google")["id"]

    # Stored rows beside defaults: masked, revealed, one type.
    assert_published(app, "get", DOCUMENT, await client.get(f"/config/{TENANT}", headers=editor))
    revealed = await client.get(f"/config/{TENANT}?include_secrets=true", headers=service)
    assert_published(app, "get", DOCUMENT, revealed)
    assert find(revealed.json(), "map", "google")["api_key"] == "key-abcdefgh1234"
    one_type = await client.get(f"/config/{TENANT}?provider_type=map", headers=editor)
    assert_published(app, "get", DOCUMENT, one_type)

    # Rollback and delete answer the document too.
    rolled_back = await client.post(
        f"/config/{TENANT}/rollback",
        json={"config_id": config_id, "version": 1, "reason": "zoom back"},
        headers=editor,
    )
    rollback_path = "/config/{tenant_id}/rollback"
    assert_published(app, "post", rollback_path, rolled_back, model_name="ConfigDocument")
    preview = await client.post(
        f"/config/{TENANT}/rollback?dry_run=true",
        json={"config_id": config_id, "version": 2, "reason": "zoom again"},
        headers=editor,
    )
    assert_published(app, "post", rollback_path, preview, model_name="RollbackPreview")
    deleted = await client.delete(
        f"/config/{TENANT}?provider_type=sms&provider_name=vonage&change_reason=gone",
        headers=editor,
    )
    assert_published(app, "delete", DOCUMENT, deleted)

    # History: a full page, a page with a next cursor, and the page that cursor leads to.
    path = "/config/{tenant_id}/history"
    full = await client.get(f"/config/{TENANT}/history", headers=editor)
    assert_published(app, "get", path, full)
    assert {item["change_type"] for item in full.json()["items"]} >= {
        "created",
        "updated",
        "rolled_back",
        "deleted",
    }
    first = await client.get(f"/config/{TENANT}/history?limit=1", headers=editor)
    assert_published(app, "get", path, first)
    cursor = first.json()["next_cursor"]
    assert cursor is not None
    rest = await client.get(f"/config/{TENANT}/history", params={"cursor": cursor}, headers=editor)
    assert_published(app, "get", path, rest)

    # Diffs: the latest change, and two chosen versions.
    diff_path = "/config/{tenant_id}/diff"
    latest = await client.get(f"/config/{TENANT}/diff?config_id={config_id}", headers=editor)
    assert_published(app, "get", diff_path, latest)
    chosen = await client.get(
        f"/config/{TENANT}/diff",
        params={"config_id": config_id, "from": 0, "to": 3},
        headers=editor,
    )
    assert_published(app, "get", diff_path, chosen)
