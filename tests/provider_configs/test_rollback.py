"""POST /config/{tenant_id}/rollback: old content as a new version; history is never rewritten."""

from __future__ import annotations

from typing import Any

import httpx

from app.state import app_state
from tests.conftest import TokenFactory, bearer, recorded_statements
from tests.provider_configs.conftest import TENANT, find, history, post_config, provider


async def _google_id(client: httpx.AsyncClient, editor: dict) -> str:
    document = (await client.get(f"/config/{TENANT}", headers=editor)).json()
    config_id: str = find(document, "map", "google")["id"]
    return config_id


async def _rollback(
    client: httpx.AsyncClient, headers: dict, tenant_id: str = TENANT, **body: Any
) -> httpx.Response:
    return await client.post(f"/config/{tenant_id}/rollback", json=body, headers=headers)


async def test_rollback_writes_the_old_content_as_a_new_version(
    client: httpx.AsyncClient, editor: dict
) -> None:
    await post_config(client, editor, map=[provider("google", config_data={"v": 1})])
    await post_config(client, editor, map=[provider("google", config_data={"v": 2})])
    config_id = await _google_id(client, editor)
    response = await _rollback(client, editor, config_id=config_id, version=1, reason="bad zoom")
    assert response.status_code == 200
    google = find(response.json(), "map", "google")
    assert google["config_data"] == {"v": 1}
    assert google["version"] == 3
    latest = (await history(client, editor))[0]
    assert latest["change_type"] == "rolled_back"
    assert latest["source_version"] == 1
    assert latest["change_reason"] == "bad zoom"


async def test_rollback_keeps_the_history_it_rolls_back_over(
    client: httpx.AsyncClient, editor: dict
) -> None:
    await post_config(client, editor, map=[provider("google", config_data={"v": 1})])
    await post_config(client, editor, map=[provider("google", config_data={"v": 2})])
    config_id = await _google_id(client, editor)
    await _rollback(client, editor, config_id=config_id, version=1, reason="x")
    items = await history(client, editor)
    assert [i["version"] for i in items] == [3, 2, 1]
    assert items[1]["snapshot"]["config_data"] == {"v": 2}


async def test_rollback_restores_the_secret_of_that_version(
    client: httpx.AsyncClient, editor: dict, service_caller: dict
) -> None:
    await post_config(client, editor, map=[provider("google", api_key="first-key-aaaa1111")])
    await post_config(client, editor, map=[provider("google", api_key="second-key-bbbb2222")])
    config_id = await _google_id(client, editor)
    await _rollback(client, editor, config_id=config_id, version=1, reason="rotate back")
    revealed = await client.get(f"/config/{TENANT}?include_secrets=true", headers=service_caller)
    assert find(revealed.json(), "map", "google")["api_key"] == "first-key-aaaa1111"


async def test_rollback_brings_a_deleted_config_back(
    client: httpx.AsyncClient, editor: dict
) -> None:
    await post_config(client, editor, map=[provider("google", config_data={"v": 1})])
    config_id = await _google_id(client, editor)
    await client.delete(f"/config/{TENANT}", params={"change_reason": "oops"}, headers=editor)
    response = await _rollback(client, editor, config_id=config_id, version=1, reason="undo")
    google = find(response.json(), "map", "google")
    assert google["config_data"] == {"v": 1}
    assert google["id"] == config_id
    assert google["version"] == 3


async def test_rollback_to_a_missing_version_is_a_404(
    client: httpx.AsyncClient, editor: dict
) -> None:
    await post_config(client, editor, map=[provider("google")])
    config_id = await _google_id(client, editor)
    response = await _rollback(client, editor, config_id=config_id, version=7, reason="x")
    assert response.status_code == 404
    assert len(await history(client, editor)) == 1


async def test_rollback_of_another_tenants_config_is_a_404(
    client: httpx.AsyncClient, editor: dict, make_token: TokenFactory
) -> None:
    await post_config(client, editor, map=[provider("google")])
    config_id = await _google_id(client, editor)
    other = bearer(make_token(["tenant-b"], roles=["service"]))
    response = await _rollback(
        client, other, "tenant-b", config_id=config_id, version=1, reason="x"
    )
    assert response.status_code == 404


async def test_rollback_of_an_unknown_config_is_a_404(
    client: httpx.AsyncClient, editor: dict
) -> None:
    response = await _rollback(client, editor, config_id="nope", version=1, reason="x")
    assert response.status_code == 404


async def test_rollback_needs_a_reason(client: httpx.AsyncClient, editor: dict) -> None:
    await post_config(client, editor, map=[provider("google")])
    config_id = await _google_id(client, editor)
    response = await _rollback(client, editor, config_id=config_id, version=1)
    assert response.status_code == 422
    assert "reason" in response.json()["detail"]


async def test_rollback_with_a_stale_expected_version_is_a_409(
    client: httpx.AsyncClient, editor: dict
) -> None:
    await post_config(client, editor, map=[provider("google", config_data={"v": 1})])
    await post_config(client, editor, map=[provider("google", config_data={"v": 2})])
    config_id = await _google_id(client, editor)
    response = await _rollback(
        client, editor, config_id=config_id, version=1, expected_version=1, reason="x"
    )
    assert response.status_code == 409
    assert response.json()["current_version"] == 2


async def test_rollback_to_a_deletion_is_a_422(client: httpx.AsyncClient, editor: dict) -> None:
    await post_config(client, editor, map=[provider("google")])
    config_id = await _google_id(client, editor)
    await client.delete(f"/config/{TENANT}", params={"change_reason": "x"}, headers=editor)
    response = await _rollback(client, editor, config_id=config_id, version=2, reason="x")
    assert response.status_code == 422


def _writes(statement: str) -> bool:
    return statement.lstrip().split(None, 1)[0].upper() in {"INSERT", "UPDATE", "DELETE"}


async def test_a_dry_run_answers_the_changes_and_writes_nothing(
    app: Any, client: httpx.AsyncClient, editor: dict
) -> None:
    await post_config(
        client, editor, map=[provider("google", api_key="first-key-aaaa1111", config_data={"v": 1})]
    )
    await post_config(
        client,
        editor,
        map=[
            provider("google", api_key="second-key-bbbb2222", config_data={"v": 2}, enabled=False)
        ],
    )
    config_id = await _google_id(client, editor)  # the GET warms the cache
    cache = app_state(app).provider_configs.cache
    loads = cache.database_loads
    with recorded_statements(app, _writes) as writes:
        response = await client.post(
            f"/config/{TENANT}/rollback?dry_run=true",
            json={"config_id": config_id, "version": 1, "reason": "preview"},
            headers=editor,
        )
    assert response.status_code == 200, response.text
    assert writes == []
    preview = response.json()
    assert preview["dry_run"] is True
    assert (preview["current_version"], preview["source_version"], preview["new_version"]) == (
        2,
        1,
        3,
    )
    assert preview["changes"] == [
        {"field": "enabled", "change": "changed", "before": False, "after": True, "secret": False},
        {"field": "config_data.v", "change": "changed", "before": 2, "after": 1, "secret": False},
        {"field": "api_key", "change": "changed", "secret": True},
    ]
    assert "aaaa1111" not in response.text and "bbbb2222" not in response.text
    # No version was written and the cache was not invalidated: the next read is still warm.
    assert [i["version"] for i in await history(client, editor)] == [2, 1]
    assert (
        find((await client.get(f"/config/{TENANT}", headers=editor)).json(), "map", "google")[
            "version"
        ]
        == 2
    )
    assert cache.database_loads == loads


async def test_a_dry_run_of_a_deleted_config_shows_it_coming_back(
    client: httpx.AsyncClient, editor: dict
) -> None:
    await post_config(client, editor, map=[provider("google", config_data={"v": 1})])
    config_id = await _google_id(client, editor)
    await client.delete(f"/config/{TENANT}?provider_name=google&change_reason=x", headers=editor)
    response = await client.post(
        f"/config/{TENANT}/rollback?dry_run=true",
        json={"config_id": config_id, "version": 1, "reason": "preview"},
        headers=editor,
    )
    assert response.json()["changes"] == [
        {"field": "deleted", "change": "changed", "before": True, "after": False, "secret": False}
    ]


async def test_a_dry_run_makes_the_checks_the_rollback_makes(
    client: httpx.AsyncClient, editor: dict, make_token: TokenFactory
) -> None:
    await post_config(client, editor, map=[provider("google", config_data={"v": 1})])
    await post_config(client, editor, map=[provider("google", config_data={"v": 2})])
    config_id = await _google_id(client, editor)
    url = f"/config/{TENANT}/rollback?dry_run=true"
    body = {"config_id": config_id, "reason": "preview"}
    stale = await client.post(
        url, json={**body, "version": 1, "expected_version": 1}, headers=editor
    )
    assert stale.status_code == 409
    assert stale.json()["current_version"] == 2
    missing = await client.post(url, json={**body, "version": 7}, headers=editor)
    assert missing.status_code == 404
    member = bearer(make_token([TENANT]))
    assert (await client.post(url, json={**body, "version": 1}, headers=member)).status_code == 403
    other = bearer(make_token(["tenant-b"], roles=["service"]))
    foreign = await client.post(
        "/config/tenant-b/rollback?dry_run=true", json={**body, "version": 1}, headers=other
    )
    assert foreign.status_code == 404
    bad = await client.post(f"/config/{TENANT}/rollback?dry_run=maybe", json=body, headers=editor)
    assert bad.status_code == 422
