"""Conditional requests: GET's ETag and 304, writes conditional on If-Match (412)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import TokenFactory, bearer, recorded_statements
from tests.provider_configs.conftest import TENANT, find, history, post_config, provider

URL = f"/config/{TENANT}"


async def _etag(client: httpx.AsyncClient, headers: dict[str, str], url: str = URL) -> str:
    response = await client.get(url, headers=headers)
    assert response.status_code == 200, response.text
    etag = response.headers["etag"]
    return etag


async def test_the_document_carries_a_strong_etag(client: httpx.AsyncClient, editor: dict) -> None:
    etag = await _etag(client, editor)
    assert etag.startswith('"') and etag.endswith('"')  # not W/: a strong tag
    assert await _etag(client, editor) == etag


async def test_if_none_match_with_the_current_tag_is_a_304(
    client: httpx.AsyncClient, editor: dict
) -> None:
    await post_config(client, editor, map=[provider("google")])
    etag = await _etag(client, editor)
    response = await client.get(URL, headers={**editor, "If-None-Match": etag})
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == etag
    listed = await client.get(URL, headers={**editor, "If-None-Match": f'"other", W/{etag}'})
    assert listed.status_code == 304


async def test_a_304_on_the_cached_path_touches_no_database(
    app: Any, client: httpx.AsyncClient, editor: dict
) -> None:
    await post_config(client, editor, map=[provider("google")])
    etag = await _etag(client, editor)  # warms the cache
    with recorded_statements(app, lambda _statement: True) as statements:
        response = await client.get(URL, headers={**editor, "If-None-Match": etag})
    assert response.status_code == 304
    assert statements == []


async def test_a_write_changes_the_tag_and_answers_the_new_one(
    client: httpx.AsyncClient, editor: dict
) -> None:
    await post_config(client, editor, map=[provider("google", config_data={"v": 1})])
    old = await _etag(client, editor)
    written = await post_config(client, editor, map=[provider("google", config_data={"v": 2})])
    assert written.headers["etag"] != old
    response = await client.get(URL, headers={**editor, "If-None-Match": old})
    assert response.status_code == 200
    assert response.headers["etag"] == written.headers["etag"]
    assert find(response.json(), "map", "google")["config_data"] == {"v": 2}


async def test_each_document_has_its_own_tag(
    client: httpx.AsyncClient, editor: dict, make_token: TokenFactory
) -> None:
    await post_config(client, editor, map=[provider("google")])
    whole = await _etag(client, editor)
    only_map = await _etag(client, editor, f"{URL}?provider_type=map")
    assert whole != only_map
    refused = await client.get(
        f"{URL}?provider_type=sms", headers={**editor, "If-None-Match": only_map}
    )
    assert refused.status_code == 200
    # Two tenants on the same defaults still have different tags.
    other = bearer(make_token(["tenant-b"]))
    empty = await _etag(client, other, "/config/tenant-b")
    other_response = await client.get("/config/tenant-b", headers={**other, "If-None-Match": whole})
    assert other_response.status_code == 200
    assert empty != whole


async def test_a_revealed_document_has_no_tag(
    client: httpx.AsyncClient, editor: dict, service_caller: dict
) -> None:
    await post_config(client, editor, map=[provider("google", api_key="key-abcdefgh1234")])
    response = await client.get(f"{URL}?include_secrets=true", headers=service_caller)
    assert response.status_code == 200
    assert "etag" not in response.headers
    assert response.headers["cache-control"] == "no-store"


async def test_a_write_with_the_current_tag_succeeds(
    client: httpx.AsyncClient, editor: dict
) -> None:
    await post_config(client, editor, map=[provider("google", config_data={"v": 1})])
    etag = await _etag(client, editor)
    response = await client.post(
        URL,
        json={"map_providers": [provider("google", config_data={"v": 2})]},
        headers={**editor, "If-Match": etag},
    )
    assert response.status_code == 200, response.text
    assert find(response.json(), "map", "google")["config_data"] == {"v": 2}


async def test_a_write_with_a_stale_tag_is_a_412_and_writes_nothing(
    client: httpx.AsyncClient, editor: dict
) -> None:
    await post_config(client, editor, map=[provider("google", config_data={"v": 1})])
    stale = await _etag(client, editor)
    current = await post_config(client, editor, map=[provider("google", config_data={"v": 2})])
    response = await client.post(
        URL,
        json={"map_providers": [provider("google", config_data={"v": 3})]},
        headers={**editor, "If-Match": stale},
    )
    assert response.status_code == 412
    body = response.json()
    assert body["error"] == "precondition_failed"
    assert body["current_etag"] == current.headers["etag"]
    assert [i["version"] for i in await history(client, editor)] == [2, 1]


async def test_a_new_provider_elsewhere_fails_a_whole_document_tag(
    client: httpx.AsyncClient, editor: dict
) -> None:
    await post_config(client, editor, map=[provider("google")])
    whole = await _etag(client, editor)
    only_map = await _etag(client, editor, f"{URL}?provider_type=map")
    await post_config(client, editor, sms=[provider("twilio")])
    body = {"map_providers": [provider("google", enabled=False)]}
    stale = await client.post(URL, json=body, headers={**editor, "If-Match": whole})
    assert stale.status_code == 412
    # The map document it was read from did not change: a tag of that scope still holds.
    scoped = await client.post(URL, json=body, headers={**editor, "If-Match": only_map})
    assert scoped.status_code == 200, scoped.text


async def test_if_match_star_passes_and_weak_or_unknown_tags_fail(
    client: httpx.AsyncClient, editor: dict
) -> None:
    await post_config(client, editor, map=[provider("google")])
    etag = await _etag(client, editor)
    body = {"map_providers": [provider("google", enabled=False)]}
    for tag in (f"W/{etag}", '"garbage"', '"map.0000"'):
        response = await client.post(URL, json=body, headers={**editor, "If-Match": tag})
        assert response.status_code == 412, tag
    star = await client.post(URL, json=body, headers={**editor, "If-Match": "*"})
    assert star.status_code == 200
    listed = await client.post(
        URL,
        json={"map_providers": [provider("google", enabled=True)]},
        headers={**editor, "If-Match": f'"stale", {star.headers["etag"]}'},
    )
    assert listed.status_code == 200


async def test_delete_and_rollback_honour_if_match(client: httpx.AsyncClient, editor: dict) -> None:
    first = await post_config(client, editor, map=[provider("google", config_data={"v": 1})])
    config_id = find(first.json(), "map", "google")["id"]
    stale = first.headers["etag"]
    await post_config(client, editor, map=[provider("google", config_data={"v": 2})])
    deleted = await client.delete(
        f"{URL}?provider_name=google&change_reason=x", headers={**editor, "If-Match": stale}
    )
    assert deleted.status_code == 412
    rollback = {"config_id": config_id, "version": 1, "reason": "back"}
    for url in (f"{URL}/rollback", f"{URL}/rollback?dry_run=true"):
        refused = await client.post(url, json=rollback, headers={**editor, "If-Match": stale})
        assert refused.status_code == 412, url
    current = await _etag(client, editor)
    rolled = await client.post(
        f"{URL}/rollback", json=rollback, headers={**editor, "If-Match": current}
    )
    assert rolled.status_code == 200
    assert [i["version"] for i in await history(client, editor)] == [3, 2, 1]


async def test_if_match_and_expected_version_are_both_checked(
    client: httpx.AsyncClient, editor: dict
) -> None:
    await post_config(client, editor, map=[provider("google")])
    etag = await _etag(client, editor)
    response = await client.post(
        URL,
        json={"map_providers": [provider("google", enabled=False, expected_version=7)]},
        headers={**editor, "If-Match": etag},
    )
    assert response.status_code == 409
    assert response.json()["error"] == "version_conflict"
