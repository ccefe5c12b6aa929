"""POST /usage/openai: recording, cost, idempotency, batches, access and bad input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx

from tests.conftest import TokenFactory, bearer
from tests.usage.conftest import Post, Summary, event_body


async def test_event_is_recorded_with_its_estimated_cost(post_usage: Post) -> None:
    response = await post_usage(
        event_body(model="gpt-4o", prompt_tokens=1000, completion_tokens=500)
    )
    assert response.status_code == 201
    event = response.json()
    assert Decimal(event["estimated_cost_usd"]) == Decimal("0.0075")
    assert event["total_tokens"] == 1500
    assert event["duplicate"] is False
    assert event["id"]


async def test_unknown_model_is_stored_with_cost_null(post_usage: Post, summary: Summary) -> None:
    response = await post_usage(event_body(model="llama-3-70b"))
    assert response.status_code == 201
    assert response.json()["estimated_cost_usd"] is None
    totals = (await summary())["totals"]
    assert totals["calls"] == 1
    assert totals["unpriced_calls"] == 1
    assert Decimal(totals["estimated_cost_usd"]) == 0


async def test_occurred_at_is_kept_in_utc(post_usage: Post) -> None:
    response = await post_usage(event_body(occurred_at="2026-11-02T10:30:00+02:00"))
    assert response.status_code == 201
    assert response.json()["occurred_at"].startswith("2026-11-02T08:30:00")


async def test_occurred_at_defaults_to_now(post_usage: Post) -> None:
    before = datetime.now(UTC)
    body = event_body()
    response = await post_usage(body)
    occurred_at = datetime.fromisoformat(response.json()["occurred_at"])
    assert before <= occurred_at <= datetime.now(UTC)


async def test_repeated_request_id_returns_the_first_event_unchanged(post_usage: Post) -> None:
    first = await post_usage(event_body(request_id="call-1", prompt_tokens=10))
    repeat = await post_usage(event_body(request_id="call-1", prompt_tokens=99999))
    assert repeat.status_code == 200
    assert repeat.json()["duplicate"] is True
    assert repeat.json()["id"] == first.json()["id"]
    assert repeat.json()["prompt_tokens"] == 10


async def test_repeated_request_id_leaves_counters_and_totals_unchanged(
    post_usage: Post, summary: Summary
) -> None:
    await post_usage(event_body(request_id="call-1", prompt_tokens=10, completion_tokens=5))
    await post_usage(event_body(request_id="call-1", prompt_tokens=10, completion_tokens=5))
    body = await summary()
    assert body["totals"]["calls"] == 1
    assert body["current_period"]["used"] == {"tokens": 15, "calls": 1}


async def test_same_request_id_in_another_tenant_is_a_new_event(
    post_usage: Post, make_token: TokenFactory
) -> None:
    headers = bearer(make_token(tenants=["tenant-a", "tenant-b"], roles=["service"]))
    first = await post_usage(event_body(tenant_id="tenant-a", request_id="r"), headers)
    other = await post_usage(event_body(tenant_id="tenant-b", request_id="r"), headers)
    assert other.status_code == 201
    assert other.json()["id"] != first.json()["id"]


async def test_events_without_request_id_are_never_deduplicated(
    post_usage: Post, summary: Summary
) -> None:
    for _ in range(2):
        response = await post_usage(event_body(request_id=None))
        assert response.status_code == 201
    assert (await summary())["totals"]["calls"] == 2


async def test_batch_records_every_event_in_the_order_sent(
    post_usage: Post, summary: Summary
) -> None:
    events = [event_body(prompt_tokens=i, completion_tokens=0) for i in range(1, 6)]
    response = await post_usage(events)
    assert response.status_code == 201
    body = response.json()
    assert body["created"] == 5 and body["duplicates"] == 0
    assert [item["prompt_tokens"] for item in body["items"]] == [1, 2, 3, 4, 5]
    assert (await summary())["totals"]["prompt_tokens"] == 15


async def test_batch_of_a_thousand_is_accepted(post_usage: Post, summary: Summary) -> None:
    response = await post_usage(
        [event_body(prompt_tokens=1, completion_tokens=1) for _ in range(1000)]
    )
    assert response.status_code == 201
    assert response.json()["created"] == 1000
    assert (await summary())["current_period"]["used"] == {"tokens": 2000, "calls": 1000}


async def test_batch_over_a_thousand_is_refused(post_usage: Post, summary: Summary) -> None:
    response = await post_usage([event_body() for _ in range(1001)])
    assert response.status_code == 422
    assert (await summary())["totals"]["calls"] == 0


async def test_empty_batch_is_refused(post_usage: Post) -> None:
    response = await post_usage([])
    assert response.status_code == 422


async def test_batch_with_one_bad_event_stores_nothing(post_usage: Post, summary: Summary) -> None:
    events = [event_body(), event_body(prompt_tokens=-1), event_body()]
    response = await post_usage(events)
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "[1].prompt_tokens"
    assert (await summary())["totals"]["calls"] == 0


async def test_batch_with_a_tenant_the_caller_lacks_stores_nothing(
    post_usage: Post, summary: Summary
) -> None:
    response = await post_usage([event_body(), event_body(tenant_id="tenant-z")])
    assert response.status_code == 403
    assert (await summary())["totals"]["calls"] == 0


async def test_batch_repeat_within_the_batch_counts_once(
    post_usage: Post, summary: Summary
) -> None:
    response = await post_usage([event_body(request_id="x"), event_body(request_id="x")])
    body = response.json()
    assert body["created"] == 1 and body["duplicates"] == 1
    assert body["items"][1]["id"] == body["items"][0]["id"]
    assert (await summary())["totals"]["calls"] == 1


async def test_batch_of_only_repeats_answers_200(post_usage: Post) -> None:
    events = [event_body(request_id="a"), event_body(request_id="b")]
    await post_usage(events)
    response = await post_usage(events)
    assert response.status_code == 200
    assert response.json()["duplicates"] == 2


async def test_negative_tokens_are_refused_naming_the_field(post_usage: Post) -> None:
    response = await post_usage(event_body(completion_tokens=-5))
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "completion_tokens"


async def test_fractional_string_or_boolean_tokens_are_refused(post_usage: Post) -> None:
    assert (await post_usage(event_body(prompt_tokens=1.5))).status_code == 422
    assert (await post_usage(event_body(prompt_tokens="12"))).status_code == 422
    assert (await post_usage(event_body(completion_tokens=True))).status_code == 422


async def test_a_whole_number_written_with_a_fraction_is_that_integer(post_usage: Post) -> None:
    response = await post_usage(event_body(prompt_tokens=12.0, completion_tokens=3))
    assert response.status_code == 201
    assert response.json()["prompt_tokens"] == 12
    assert response.json()["total_tokens"] == 15


async def test_missing_field_is_refused_naming_it(post_usage: Post) -> None:
    body = event_body()
    del body["model"]
    response = await post_usage(body)
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "model"


async def test_unknown_field_is_refused(post_usage: Post) -> None:
    response = await post_usage(event_body(cost=1))
    assert response.status_code == 422
    assert response.json()["fields"][0] == {"field": "cost", "message": "unknown field"}


async def test_naive_occurred_at_is_refused(post_usage: Post) -> None:
    response = await post_usage(event_body(occurred_at="2026-11-02T10:30:00"))
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "occurred_at"


async def test_future_occurred_at_is_refused(post_usage: Post, summary: Summary) -> None:
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    response = await post_usage([event_body(), event_body(occurred_at=tomorrow)])
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "[1].occurred_at"
    assert (await summary())["totals"]["calls"] == 0


async def test_body_that_is_not_json_is_refused(
    client: httpx.AsyncClient, service_headers: dict[str, str]
) -> None:
    response = await client.post(
        "/usage/openai",
        content=b"{not json",
        headers={**service_headers, "content-type": "application/json"},
    )
    assert response.status_code == 422


async def test_tenant_the_caller_lacks_is_forbidden(post_usage: Post, summary: Summary) -> None:
    response = await post_usage(event_body(tenant_id="tenant-b"))
    assert response.status_code == 403
    assert (await summary("tenant-b"))["totals"]["calls"] == 0


async def test_caller_without_service_role_is_forbidden(
    post_usage: Post, make_token: TokenFactory
) -> None:
    response = await post_usage(event_body(), bearer(make_token(tenants=["tenant-a"])))
    assert response.status_code == 403


async def test_admin_may_record_usage(post_usage: Post, admin_headers: dict[str, str]) -> None:
    response = await post_usage(event_body(), admin_headers)
    assert response.status_code == 201


async def test_missing_token_is_unauthorized(client: httpx.AsyncClient) -> None:
    response = await client.post("/usage/openai", json=event_body())
    assert response.status_code == 401


async def test_event_counts_in_the_month_it_occurred(post_usage: Post, summary: Summary) -> None:
    last_year = datetime.now(UTC) - timedelta(days=400)
    await post_usage(event_body(occurred_at=last_year.isoformat()))
    await post_usage(event_body(prompt_tokens=3, completion_tokens=4))
    assert (await summary())["current_period"]["used"] == {"tokens": 7, "calls": 1}


async def test_anonymous_caller_with_a_bad_body_is_unauthorized_not_told_why(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/usage/openai", json={"prompt_tokens": -1})
    assert response.status_code == 401


async def test_occurred_at_that_leaves_the_calendar_in_utc_is_refused(
    post_usage: Post, summary: Summary
) -> None:
    for occurred_at in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"):
        response = await post_usage(event_body(occurred_at=occurred_at))
        assert response.status_code == 422, occurred_at
        assert response.json()["fields"][0]["field"] == "occurred_at"
    assert (await summary())["totals"]["calls"] == 0


async def test_nul_character_in_text_fields_is_refused(post_usage: Post, summary: Summary) -> None:
    for field in ("model", "source", "request_id"):
        response = await post_usage(event_body(**{field: "a\u0000b"}))
        assert response.status_code == 422, field
        assert response.json()["fields"][0]["field"] == field
    assert (await summary())["totals"]["calls"] == 0
