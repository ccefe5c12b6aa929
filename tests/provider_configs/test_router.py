"""Reading and writing /config/{tenant_id}: document shape, change types, optimistic concurrency."""

from __future__ import annotations

import json

import httpx
import pytest

from app.core.config import Settings
from app.core.deps import TENANT_ID_PATTERN
from tests.conftest import TokenFactory, bearer, build_settings, running_app
from tests.provider_configs.conftest import TENANT, find, history, post_config, provider

DEFAULTS = {
    "map_providers": [
        {"provider_name": "osm", "priority": "primary", "config_data": {"style": "basic"}}
    ],
    "sms_providers": [{"provider_name": "twilio", "api_key": "default-key-123456"}],
}


async def test_tenant_without_configuration_gets_defaults_marked_default(
    settings: Settings, make_token: TokenFactory
) -> None:
    custom = build_settings(settings.database_url, provider_config_defaults=json.dumps(DEFAULTS))
    async with running_app(custom) as (_, client):
        response = await client.get(f"/config/{TENANT}", headers=bearer(make_token([TENANT])))
    assert response.status_code == 200
    document = response.json()
    assert document["source"] == "default"
    osm = find(document, "map", "osm")
    assert osm["source"] == "default"
    assert osm["config_data"] == {"style": "basic"}
    assert find(document, "sms", "twilio")["api_key"] == "****3456"
    assert document["weather_providers"] == []


async def test_defaults_can_come_from_a_file(
    settings: Settings, make_token: TokenFactory, tmp_path: pytest.TempPathFactory
) -> None:
    path = tmp_path / "defaults.json"  # type: ignore[operator]
    path.write_text(json.dumps(DEFAULTS))
    custom = build_settings(settings.database_url, provider_config_defaults=str(path))
    async with running_app(custom) as (_, client):
        response = await client.get(
            f"/config/{TENANT}?provider_type=map", headers=bearer(make_token([TENANT]))
        )
    assert response.json()["map_providers"][0]["provider_name"] == "osm"


async def test_the_document_has_every_provider_list(
    client: httpx.AsyncClient, editor: dict
) -> None:
    response = await client.get(f"/config/{TENANT}", headers=editor)
    assert set(response.json()) == {
        "tenant_id",
        "source",
        "map_providers",
        "weather_providers",
        "satellite_providers",
        "payment_providers",
        "sms_providers",
        "notification_providers",
    }


async def test_provider_type_filter_returns_only_that_list(
    client: httpx.AsyncClient, editor: dict
) -> None:
    await post_config(client, editor, map=[provider("google")], sms=[provider("twilio")])
    response = await client.get(f"/config/{TENANT}?provider_type=sms", headers=editor)
    document = response.json()
    assert "map_providers" not in document
    assert [p["provider_name"] for p in document["sms_providers"]] == ["twilio"]


async def test_unknown_provider_type_is_a_422(client: httpx.AsyncClient, editor: dict) -> None:
    response = await client.get(f"/config/{TENANT}?provider_type=fax", headers=editor)
    assert response.status_code == 422
    assert "provider_type" in response.json()["detail"]


async def test_a_bad_tenant_id_in_the_read_path_is_a_422_naming_it(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    response = await client.get("/config/bad%20tenant!", headers=bearer(make_token(["*"])))
    assert response.status_code == 422
    assert response.json()["fields"] == [
        {"field": "path.tenant_id", "message": f"must match {TENANT_ID_PATTERN}"}
    ]


@pytest.mark.parametrize("value", ["maybe", "2", ""])
async def test_include_secrets_must_be_a_boolean(
    client: httpx.AsyncClient, editor: dict, value: str
) -> None:
    response = await client.get(f"/config/{TENANT}?include_secrets={value}", headers=editor)
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "query.include_secrets"


async def test_the_read_route_is_documented_with_its_parameters(
    client: httpx.AsyncClient,
) -> None:
    schema = (await client.get("/openapi.json")).json()
    operation = schema["paths"]["/config/{tenant_id}"]["get"]
    names = {(p["in"], p["name"]) for p in operation["parameters"]}
    assert names == {
        ("path", "tenant_id"),
        ("query", "provider_type"),
        ("query", "include_secrets"),
        ("header", "If-None-Match"),
    }
    assert {"200", "304", "403"} <= set(operation["responses"])


async def test_a_caller_without_the_tenant_gets_403(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    other = bearer(make_token(["tenant-b"], roles=["service"]))
    assert (await client.get(f"/config/{TENANT}", headers=other)).status_code == 403
    written = await post_config(client, other, map=[provider("google")])
    assert written.status_code == 403


async def test_reads_need_a_bearer_token(client: httpx.AsyncClient) -> None:
    assert (await client.get(f"/config/{TENANT}")).status_code == 401


async def test_post_creates_a_provider_and_answers_the_whole_document(
    client: httpx.AsyncClient, editor: dict
) -> None:
    response = await post_config(
        client, editor, map=[provider("google", priority="secondary", config_data={"zoom": 3})]
    )
    assert response.status_code == 200
    document = response.json()
    assert document["tenant_id"] == TENANT
    assert document["source"] == "tenant"
    google = find(document, "map", "google")
    assert google["version"] == 1
    assert google["priority"] == "secondary"
    assert google["enabled"] is True
    assert google["config_data"] == {"zoom": 3}
    assert google["updated_by"] == "alice"
    assert google["id"] and google["updated_at"]
    assert "weather_providers" in document


async def test_post_leaves_unlisted_providers_untouched(
    client: httpx.AsyncClient, editor: dict
) -> None:
    await post_config(client, editor, map=[provider("google", config_data={"a": 1})])
    await post_config(client, editor, map=[provider("mapbox")])
    document = (await client.get(f"/config/{TENANT}", headers=editor)).json()
    assert find(document, "map", "google")["config_data"] == {"a": 1}
    assert find(document, "map", "google")["version"] == 1


async def test_providers_are_ordered_by_priority(client: httpx.AsyncClient, editor: dict) -> None:
    await post_config(
        client,
        editor,
        map=[
            provider("zeta", priority="fallback"),
            provider("alpha", priority="secondary"),
            provider("mid", priority="primary"),
        ],
    )
    document = (await client.get(f"/config/{TENANT}", headers=editor)).json()
    assert [p["provider_name"] for p in document["map_providers"]] == ["mid", "alpha", "zeta"]


async def test_a_post_that_changes_nothing_writes_no_version(
    client: httpx.AsyncClient, editor: dict
) -> None:
    await post_config(client, editor, map=[provider("google", config_data={"a": 1})])
    again = await post_config(client, editor, map=[provider("google", config_data={"a": 1})])
    assert find(again.json(), "map", "google")["version"] == 1
    assert len(await history(client, editor)) == 1


async def test_changing_config_data_writes_an_updated_version(
    client: httpx.AsyncClient, editor: dict
) -> None:
    await post_config(client, editor, map=[provider("google", config_data={"a": 1})])
    response = await post_config(
        client, editor, map=[provider("google", config_data={"a": 2})], change_reason="new zoom"
    )
    assert find(response.json(), "map", "google")["version"] == 2
    latest = (await history(client, editor))[0]
    assert latest["change_type"] == "updated"
    assert latest["change_reason"] == "new zoom"
    assert latest["changed_by"] == "alice"


async def test_disabling_and_enabling_are_their_own_change_types(
    client: httpx.AsyncClient, editor: dict
) -> None:
    await post_config(client, editor, map=[provider("google")])
    await post_config(client, editor, map=[provider("google", enabled=False)])
    await post_config(client, editor, map=[provider("google", enabled=True)])
    types = [item["change_type"] for item in await history(client, editor)]
    assert types == ["enabled", "disabled", "created"]


async def test_omitted_fields_keep_their_values_on_update(
    client: httpx.AsyncClient, editor: dict
) -> None:
    await post_config(
        client, editor, map=[provider("google", priority="fallback", config_data={"k": "v"})]
    )
    response = await post_config(client, editor, map=[provider("google", enabled=False)])
    google = find(response.json(), "map", "google")
    assert google["priority"] == "fallback"
    assert google["config_data"] == {"k": "v"}
    assert google["enabled"] is False


async def test_a_get_document_can_be_posted_back_unchanged(
    client: httpx.AsyncClient, editor: dict
) -> None:
    await post_config(client, editor, map=[provider("google", api_key="key-abcdefgh1234")])
    document = (await client.get(f"/config/{TENANT}", headers=editor)).json()
    response = await client.post(f"/config/{TENANT}", json=document, headers=editor)
    assert response.status_code == 200
    assert find(response.json(), "map", "google")["version"] == 1


async def test_expected_version_mismatch_is_a_409_with_the_current_version(
    client: httpx.AsyncClient, editor: dict
) -> None:
    await post_config(client, editor, map=[provider("google", config_data={"a": 1})])
    response = await post_config(
        client, editor, map=[provider("google", config_data={"a": 2}, expected_version=5)]
    )
    assert response.status_code == 409
    assert response.json()["error"] == "version_conflict"
    assert response.json()["current_version"] == 1
    document = (await client.get(f"/config/{TENANT}", headers=editor)).json()
    assert find(document, "map", "google")["config_data"] == {"a": 1}


async def test_matching_expected_version_is_accepted(
    client: httpx.AsyncClient, editor: dict
) -> None:
    await post_config(client, editor, map=[provider("google")])
    response = await post_config(
        client, editor, map=[provider("google", config_data={"a": 2}, expected_version=1)]
    )
    assert response.status_code == 200
    assert find(response.json(), "map", "google")["version"] == 2


async def test_expected_version_zero_creates_only(client: httpx.AsyncClient, editor: dict) -> None:
    created = await post_config(client, editor, map=[provider("google", expected_version=0)])
    assert created.status_code == 200
    again = await post_config(
        client, editor, map=[provider("google", config_data={"x": 1}, expected_version=0)]
    )
    assert again.status_code == 409
    assert again.json()["current_version"] == 1


async def test_a_conflict_in_one_provider_writes_none_of_the_others(
    client: httpx.AsyncClient, editor: dict
) -> None:
    await post_config(client, editor, map=[provider("google")])
    response = await post_config(
        client,
        editor,
        map=[provider("google", config_data={"a": 1}, expected_version=9)],
        sms=[provider("twilio")],
    )
    assert response.status_code == 409
    assert len(await history(client, editor)) == 1


async def test_unknown_fields_are_a_422_naming_the_field(
    client: httpx.AsyncClient, editor: dict
) -> None:
    response = await post_config(client, editor, map=[provider("google", colour="red")])
    assert response.status_code == 422
    assert "map_providers[0].colour" in response.json()["detail"]


async def test_an_unknown_priority_is_a_422(client: httpx.AsyncClient, editor: dict) -> None:
    response = await post_config(client, editor, map=[provider("google", priority="urgent")])
    assert response.status_code == 422
    assert "priority" in response.json()["detail"]


async def test_an_unknown_provider_list_is_a_422(client: httpx.AsyncClient, editor: dict) -> None:
    response = await client.post(
        f"/config/{TENANT}", json={"fax_providers": [provider()]}, headers=editor
    )
    assert response.status_code == 422
    assert "fax_providers" in response.json()["detail"]


async def test_a_provider_listed_twice_is_a_422(client: httpx.AsyncClient, editor: dict) -> None:
    response = await post_config(client, editor, map=[provider("google"), provider("google")])
    assert response.status_code == 422
    assert len(await history(client, editor)) == 0


async def test_an_empty_body_is_a_422(client: httpx.AsyncClient, editor: dict) -> None:
    response = await client.post(f"/config/{TENANT}", json={}, headers=editor)
    assert response.status_code == 422


async def test_a_body_for_another_tenant_is_a_422(client: httpx.AsyncClient, editor: dict) -> None:
    response = await client.post(
        f"/config/{TENANT}",
        json={"tenant_id": "tenant-b", "map_providers": [provider()]},
        headers=editor,
    )
    assert response.status_code == 422
    assert "tenant_id" in response.json()["detail"]


async def test_config_data_must_be_an_object(client: httpx.AsyncClient, editor: dict) -> None:
    response = await post_config(client, editor, map=[provider("google", config_data=[1, 2])])
    assert response.status_code == 422


async def test_delete_removes_the_config_and_records_a_deleted_version(
    client: httpx.AsyncClient, editor: dict
) -> None:
    await post_config(client, editor, map=[provider("google")], sms=[provider("twilio")])
    response = await client.delete(
        f"/config/{TENANT}",
        params={"provider_type": "map", "provider_name": "google", "change_reason": "retired"},
        headers=editor,
    )
    assert response.status_code == 200
    assert response.json()["map_providers"] == []
    assert find(response.json(), "sms", "twilio")["version"] == 1
    latest = (await history(client, editor, provider_type="map"))[0]
    assert latest["change_type"] == "deleted"
    assert latest["version"] == 2
    assert latest["change_reason"] == "retired"


async def test_delete_without_filters_deletes_every_config_of_the_tenant(
    client: httpx.AsyncClient, editor: dict
) -> None:
    await post_config(client, editor, map=[provider("google")], sms=[provider("twilio")])
    response = await client.delete(
        f"/config/{TENANT}", params={"change_reason": "offboarding"}, headers=editor
    )
    assert response.json()["source"] == "default"
    deleted = [i for i in await history(client, editor) if i["change_type"] == "deleted"]
    assert len(deleted) == 2


async def test_delete_needs_a_change_reason(client: httpx.AsyncClient, editor: dict) -> None:
    await post_config(client, editor, map=[provider("google")])
    response = await client.delete(f"/config/{TENANT}", headers=editor)
    assert response.status_code == 422
    assert "change_reason" in response.json()["detail"]


async def test_deleting_nothing_is_a_404(client: httpx.AsyncClient, editor: dict) -> None:
    response = await client.delete(
        f"/config/{TENANT}", params={"provider_type": "sms", "change_reason": "x"}, headers=editor
    )
    assert response.status_code == 404


async def test_posting_a_deleted_provider_creates_it_again_continuing_its_versions(
    client: httpx.AsyncClient, editor: dict
) -> None:
    await post_config(client, editor, map=[provider("google", config_data={"old": True})])
    await client.delete(f"/config/{TENANT}", params={"change_reason": "x"}, headers=editor)
    response = await post_config(client, editor, map=[provider("google")])
    google = find(response.json(), "map", "google")
    assert google["version"] == 3
    assert google["config_data"] == {}
    assert (await history(client, editor))[0]["change_type"] == "created"


async def test_quotes_and_non_ascii_survive_the_round_trip(
    client: httpx.AsyncClient, editor: dict
) -> None:
    name = 'café "north" \\ 東京'
    config_data = {"label": 'naïve "quoted"\n', "nested": {"list": [1, 2.5, None, True]}}
    written = await post_config(client, editor, map=[provider(name, config_data=config_data)])
    assert find(written.json(), "map", name)["config_data"] == config_data
    for _ in range(2):  # the cold read, then the cached one
        document = (await client.get(f"/config/{TENANT}?provider_type=map", headers=editor)).json()
        assert find(document, "map", name)["config_data"] == config_data
