"""Diffs: each history entry against the version before it, and GET /config/{tenant_id}/diff."""

from __future__ import annotations

from typing import Any

import httpx

from app.provider_configs.diff import diff_snapshots
from tests.conftest import TokenFactory, bearer
from tests.provider_configs.conftest import TENANT, find, history, post_config, provider

KEY = "sk-live-abcdefghijkl9876"
OTHER_KEY = "sk-live-zyxwvutsrqpo4321"


def by_field(changes: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["field"]: c for c in changes}


async def _config_id(client: httpx.AsyncClient, headers: dict[str, str], **lists: Any) -> str:
    response = await post_config(client, headers, **lists)
    assert response.status_code == 200, response.text
    provider_type, providers = next(iter(lists.items()))
    return str(find(response.json(), provider_type, providers[0]["provider_name"])["id"])


async def test_a_history_entry_carries_its_changes_field_by_field(
    client: httpx.AsyncClient, editor: dict
) -> None:
    await post_config(
        client, editor, map=[provider("google", config_data={"zoom": 3, "style": {"x": 1}})]
    )
    await post_config(
        client,
        editor,
        map=[provider("google", priority="secondary", config_data={"zoom": 4, "style": {}})],
    )
    newest, first = await history(client, editor)
    assert newest["diff"]["from_version"] == 1 and newest["diff"]["to_version"] == 2
    changes = by_field(newest["diff"]["changes"])
    assert changes == {
        "priority": {
            "field": "priority",
            "change": "changed",
            "before": "primary",
            "after": "secondary",
            "secret": False,
        },
        "config_data.zoom": {
            "field": "config_data.zoom",
            "change": "changed",
            "before": 3,
            "after": 4,
            "secret": False,
        },
        "config_data.style.x": {
            "field": "config_data.style.x",
            "change": "removed",
            "before": 1,
            "secret": False,
        },
    }
    # The first version is compared with nothing: each of its fields and settings is added.
    assert first["diff"]["from_version"] is None
    added = by_field(first["diff"]["changes"])
    assert {name: c["change"] for name, c in added.items()} == {
        "provider_name": "added",
        "priority": "added",
        "enabled": "added",
        "config_data.zoom": "added",
        "config_data.style": "added",
    }
    assert added["config_data.style"]["after"] == {"x": 1}


async def test_a_diff_never_shows_a_secret(client: httpx.AsyncClient, editor: dict) -> None:
    await post_config(client, editor, payment=[provider("stripe", api_key=KEY)])
    await post_config(client, editor, payment=[provider("stripe", api_key=OTHER_KEY)])
    response = await client.get(f"/config/{TENANT}/history", headers=editor)
    newest = response.json()["items"][0]
    assert newest["diff"]["changes"] == [{"field": "api_key", "change": "changed", "secret": True}]
    assert KEY not in response.text and OTHER_KEY not in response.text
    assert "****" not in str(newest["diff"])


async def test_the_same_secret_sent_again_is_no_change(
    client: httpx.AsyncClient, editor: dict
) -> None:
    await post_config(client, editor, payment=[provider("stripe", api_key=KEY)])
    await post_config(
        client, editor, payment=[provider("stripe", api_key=KEY, config_data={"a": 1})]
    )
    newest = (await history(client, editor))[0]
    assert [c["field"] for c in newest["diff"]["changes"]] == ["config_data.a"]


async def test_a_delete_and_a_rollback_show_what_they_change(
    client: httpx.AsyncClient, editor: dict
) -> None:
    config_id = await _config_id(client, editor, map=[provider("google", config_data={"v": 1})])
    await post_config(client, editor, map=[provider("google", config_data={"v": 2})])
    await client.delete(f"/config/{TENANT}?provider_name=google&change_reason=x", headers=editor)
    rolled = await client.post(
        f"/config/{TENANT}/rollback",
        json={"config_id": config_id, "version": 1, "reason": "back"},
        headers=editor,
    )
    assert rolled.status_code == 200
    rollback_entry, delete_entry = (await history(client, editor))[:2]
    assert delete_entry["diff"]["changes"] == [
        {"field": "deleted", "change": "changed", "before": False, "after": True, "secret": False}
    ]
    assert by_field(rollback_entry["diff"]["changes"]) == {
        "config_data.v": {
            "field": "config_data.v",
            "change": "changed",
            "before": 2,
            "after": 1,
            "secret": False,
        },
        "deleted": {
            "field": "deleted",
            "change": "changed",
            "before": True,
            "after": False,
            "secret": False,
        },
    }


async def test_the_diff_route_compares_any_two_versions(
    client: httpx.AsyncClient, editor: dict
) -> None:
    config_id = await _config_id(client, editor, map=[provider("google", config_data={"v": 1})])
    await post_config(client, editor, map=[provider("google", config_data={"v": 2})])
    await post_config(client, editor, map=[provider("google", config_data={"v": 3, "w": 0})])
    response = await client.get(
        f"/config/{TENANT}/diff",
        params={"config_id": config_id, "from": 1, "to": 3},
        headers=editor,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["config_id"], body["provider_type"], body["provider_name"]) == (
        config_id,
        "map",
        "google",
    )
    assert (body["from_version"], body["to_version"]) == (1, 3)
    assert by_field(body["changes"]) == {
        "config_data.v": {
            "field": "config_data.v",
            "change": "changed",
            "before": 1,
            "after": 3,
            "secret": False,
        },
        "config_data.w": {"field": "config_data.w", "change": "added", "after": 0, "secret": False},
    }
    backwards = await client.get(
        f"/config/{TENANT}/diff",
        params={"config_id": config_id, "from": 3, "to": 1},
        headers=editor,
    )
    assert by_field(backwards.json()["changes"])["config_data.w"]["change"] == "removed"


async def test_the_diff_route_defaults_to_the_latest_change(
    client: httpx.AsyncClient, editor: dict
) -> None:
    config_id = await _config_id(client, editor, map=[provider("google", enabled=True)])
    await post_config(client, editor, map=[provider("google", enabled=False)])
    response = await client.get(f"/config/{TENANT}/diff?config_id={config_id}", headers=editor)
    body = response.json()
    assert (body["from_version"], body["to_version"]) == (1, 2)
    assert body["changes"] == [
        {"field": "enabled", "change": "changed", "before": True, "after": False, "secret": False}
    ]


async def test_an_unknown_config_or_version_is_a_404(
    client: httpx.AsyncClient, editor: dict
) -> None:
    config_id = await _config_id(client, editor, map=[provider("google")])
    unknown = await client.get(f"/config/{TENANT}/diff?config_id=nope", headers=editor)
    assert unknown.status_code == 404
    assert unknown.json()["error"] == "config_not_found"
    beyond = await client.get(
        f"/config/{TENANT}/diff", params={"config_id": config_id, "to": 9}, headers=editor
    )
    assert beyond.status_code == 404
    assert beyond.json()["error"] == "version_not_found"


async def test_bad_diff_parameters_are_a_422(client: httpx.AsyncClient, editor: dict) -> None:
    config_id = await _config_id(client, editor, map=[provider("google")])
    for params in (
        {},
        {"config_id": config_id, "from": "one"},
        {"config_id": config_id, "to": -1},
        {"config_id": config_id, "from": 2**40},
    ):
        response = await client.get(f"/config/{TENANT}/diff", params=params, headers=editor)
        assert response.status_code == 422, (params, response.text)
        assert response.json()["error"] == "validation_error"


async def test_another_tenants_config_is_not_diffed(
    client: httpx.AsyncClient, editor: dict, make_token: TokenFactory
) -> None:
    config_id = await _config_id(client, editor, map=[provider("google")])
    other = bearer(make_token(["tenant-b"]))
    found = await client.get(f"/config/tenant-b/diff?config_id={config_id}", headers=other)
    assert found.status_code == 404
    forbidden = await client.get(f"/config/{TENANT}/diff?config_id={config_id}", headers=other)
    assert forbidden.status_code == 403


def test_json_equality_tells_numbers_and_booleans_apart() -> None:
    before = {"provider_name": "p", "config_data": {"a": 1, "b": [1], "c.d": 0}}
    after = {"provider_name": "p", "config_data": {"a": True, "b": [1.0], "c.d": 0}}
    assert [c.field for c in diff_snapshots(before, after)] == ["config_data.a", "config_data.b"]
    renamed = {"provider_name": "p", "config_data": {"a": 1, "b": [1], "c.d": 1}}
    assert [c.field for c in diff_snapshots(before, renamed)] == ["config_data.c\\.d"]
