"""The input helpers of DirectRoute endpoints read a query the way Starlette's parser does."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest
from starlette.requests import Request

from app.core.errors import InvalidInput
from app.core.routing import path_param, query_flag, query_param
from app.tokens.reads import TokenView
from app.tokens.router import _token_out


def _request(query: bytes, path_params: dict[str, str] | None = None) -> Request:
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "query_string": query,
        "headers": [],
        "path_params": path_params or {},
    }
    return Request(scope)


@pytest.mark.parametrize(
    "query",
    [b"a=1&b=two", b"a=1&a=2&b=x", b"a=%C3%A9t%C3%A9&b=x+y", b"a&b=", b"=x&a=1", b"a=1;b=2"],
)
def test_every_value_matches_starlettes_parser(query: bytes) -> None:
    for name in ("a", "b", "c"):
        expected = _request(query).query_params.get(name)
        assert query_param(_request(query), name) == expected


def test_a_repeated_name_reads_its_last_value_like_starlette() -> None:
    assert query_param(_request(b"provider=a1&provider=b2"), "provider") == "b2"


def test_a_pattern_is_checked_against_the_decoded_value() -> None:
    request = _request(b"provider=local%5Foauth")
    assert query_param(request, "provider", re.compile(r"^[a-z_]+$")) == "local_oauth"
    with pytest.raises(InvalidInput) as raised:
        query_param(_request(b"provider=Local"), "provider", re.compile(r"^[a-z_]+$"))
    assert raised.value.extra["fields"] == [
        {"field": "query.provider", "message": "must match ^[a-z_]+$"}
    ]


def test_a_missing_required_parameter_names_itself() -> None:
    with pytest.raises(InvalidInput) as raised:
        query_param(_request(b""), "provider", required=True)
    assert raised.value.extra["fields"] == [
        {"field": "query.provider", "message": "field required"}
    ]


@pytest.mark.parametrize(("raw", "value"), [(b"", False), (b"x=true", True), (b"x=OFF", False)])
def test_a_flag_reads_like_a_boolean(raw: bytes, value: bool) -> None:
    assert query_flag(_request(raw), "x") is value


def test_a_path_parameter_must_match_its_pattern() -> None:
    assert path_param(_request(b"", {"id": "abc"}), "id", re.compile("^[a-c]+$")) == "abc"
    with pytest.raises(InvalidInput):
        path_param(_request(b"", {"id": "abd"}), "id", re.compile("^[a-c]+$"))


def test_the_hand_built_token_body_is_the_json_of_its_fields() -> None:
    view = TokenView(
        provider="custom",
        branch_id='branch "1" \\ ü',
        access_token="at-\u2028-\x00-ok",
        token_type="Bearer",
        expires_at=datetime(2026, 11, 25, 12, 0, tzinfo=UTC),
        scope=None,
    )
    body = json.loads(_token_out(view).body)
    assert body == {
        "provider": "custom",
        "branch_id": 'branch "1" \\ ü',
        "access_token": "at-\u2028-\x00-ok",
        "token_type": "Bearer",
        "expires_at": "2026-11-25T12:00:00+00:00",
        "scope": None,
    }
