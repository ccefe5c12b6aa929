"""Per-caller rate limits: 429 with Retry-After, counted per token caller or per address."""

from __future__ import annotations

import httpx

from app.core.config import Settings
from app.core.rate_limit import RateLimiter, parse_limits
from tests.conftest import (
    IS_POSTGRES,
    TokenFactory,
    bearer,
    build_settings,
    free_port,
    postgres_only,
    running_app,
)

CONFIG = "/config/tenant-a"


async def test_a_caller_over_its_limit_gets_a_429_with_retry_after(
    database_url: str, make_token: TokenFactory
) -> None:
    async with running_app(build_settings(database_url, rate_limit="3/minute")) as (_app, client):
        token = bearer(make_token())
        answers = [await client.get(CONFIG, headers=token) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    refused = answers[-1]
    assert refused.json()["error"] == "too_many_requests"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-request-id"]
    assert refused.headers["x-content-type-options"] == "nosniff"


async def test_callers_are_counted_apart_by_sub_within_their_tenants(
    database_url: str, make_token: TokenFactory
) -> None:
    async with running_app(build_settings(database_url, rate_limit="2/minute")) as (_app, client):
        first = bearer(make_token(sub="user-1"))
        for _ in range(2):
            assert (await client.get(CONFIG, headers=first)).status_code == 200
        assert (await client.get(CONFIG, headers=first)).status_code == 429
        # A new token of the same caller is the same caller.
        again = bearer(make_token(sub="user-1"))
        assert (await client.get(CONFIG, headers=again)).status_code == 429
        other_user = bearer(make_token(sub="user-2"))
        assert (await client.get(CONFIG, headers=other_user)).status_code == 200
        same_sub_other_tenant = bearer(make_token(sub="user-1", tenants=["tenant-b"]))
        response = await client.get("/config/tenant-b", headers=same_sub_other_tenant)
        assert response.status_code == 200


async def test_requests_without_a_valid_token_are_counted_per_address(
    database_url: str, make_token: TokenFactory
) -> None:
    settings = build_settings(
        database_url, rate_limit="100/minute", rate_limit_by_address="2/minute"
    )
    async with running_app(settings) as (_app, client):
        anonymous = await client.get("/api/admin/workspaces/tenant-a")
        forged = await client.get(CONFIG, headers=bearer("not.a.token"))
        over = await client.get("/token-management/auth/callback?state=x&code=y")
        caller = await client.get(CONFIG, headers=bearer(make_token()))
    assert [anonymous.status_code, forged.status_code] == [401, 401]
    assert over.status_code == 429
    assert caller.status_code == 200  # a caller with a valid token has a count of its own


async def test_probes_and_scrapes_are_never_limited(database_url: str) -> None:
    async with running_app(build_settings(database_url, rate_limit="1/minute")) as (_app, client):
        for path in ("/livez", "/readyz", "/api/v1/health", "/metrics") * 3:
            assert (await client.get(path)).status_code == 200, path


async def test_without_the_setting_nothing_is_limited(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    token = bearer(make_token())
    answers = [await client.get(CONFIG, headers=token) for _ in range(30)]
    assert {a.status_code for a in answers} == {200}


def test_a_malformed_limit_is_refused_at_start_up(database_url: str) -> None:
    try:
        build_settings(database_url, rate_limit="lots per minute")
    except ValueError as exc:
        assert "rate_limit" in str(exc)
    else:
        raise AssertionError("a malformed RATE_LIMIT was accepted")


async def test_without_redis_reachable_the_limits_are_counted_in_process(
    database_url: str,
) -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    settings: Settings = build_settings(database_url, redis_url=dead_redis, rate_limit="2/minute")
    limiter = RateLimiter(settings)
    try:
        items = parse_limits("2/minute")
        waits = [await limiter.retry_after("caller:x@t", items) for _ in range(3)]
    finally:
        await limiter.close()
    assert waits[:2] == [None, None]
    assert waits[2] is not None and waits[2] >= 1


@postgres_only
async def test_with_redis_the_replicas_share_one_count(
    database_url: str, make_token: TokenFactory
) -> None:
    assert IS_POSTGRES
    settings = build_settings(database_url, rate_limit="3/minute")
    token = bearer(make_token(sub="shared-caller"))
    async with running_app(settings) as (_a, first), running_app(settings) as (_b, second):
        answers = [await (first, second)[i % 2].get(CONFIG, headers=token) for i in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
