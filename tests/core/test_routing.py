"""DirectRoute parameters: read the way Starlette parses, documented as they are checked."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from starlette.requests import Request

from app.core.errors import InvalidInput
from app.core.routing import PathParam, QueryFlag, QueryParam, direct_parameters
from app.tokens.answer import TokenAnswer
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
        assert QueryParam(name).read(_request(query)) == expected


def test_a_repeated_name_reads_its_last_value_like_starlette() -> None:
    assert QueryParam("provider").read(_request(b"provider=a1&provider=b2")) == "b2"


def test_a_pattern_is_checked_against_the_decoded_value() -> None:
    provider = QueryParam("provider", r"^[a-z_]+$")
    assert provider.read(_request(b"provider=local%5Foauth")) == "local_oauth"
    with pytest.raises(InvalidInput) as raised:
        provider.read(_request(b"provider=Local"))
    assert raised.value.extra["fields"] == [
        {"field": "query.provider", "message": "must match ^[a-z_]+$"}
    ]


def test_a_missing_required_parameter_names_itself() -> None:
    with pytest.raises(InvalidInput) as raised:
        QueryParam("provider", required=True).read(_request(b""))
    assert raised.value.extra["fields"] == [
        {"field": "query.provider", "message": "field required"}
    ]


@pytest.mark.parametrize(("raw", "value"), [(b"", False), (b"x=true", True), (b"x=OFF", False)])
def test_a_flag_reads_like_a_boolean(raw: bytes, value: bool) -> None:
    assert QueryFlag("x").read(_request(raw)) is value


def test_a_path_parameter_must_match_its_pattern() -> None:
    path_id = PathParam("id", "^[a-c]+$")
    assert path_id.read(_request(b"", {"id": "abc"})) == "abc"
    with pytest.raises(InvalidInput):
        path_id.read(_request(b"", {"id": "abd"}))


def test_a_declared_parameter_documents_what_it_reads() -> None:
    documented = direct_parameters(
        PathParam("id", "^[a-c]+$", description="the id"),
        QueryParam("kind", choices=("a", "b"), required=True),
        QueryFlag("all"),
    )
    assert documented == {
        "parameters": [
            {
                "name": "id",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "pattern": "^[a-c]+$"},
                "description": "the id",
            },
            {
                "name": "kind",
                "in": "query",
                "required": True,
                "schema": {"type": "string", "enum": ["a", "b"]},
            },
            {
                "name": "all",
                "in": "query",
                "required": False,
                "schema": {"type": "boolean", "default": False},
            },
        ]
    }


def test_the_hand_built_token_body_is_the_json_of_its_fields() -> None:
    expires_at = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    answer = TokenAnswer.of(
        provider="custom",
        branch_id='branch "1" \\ ü',
        token_type="Bearer",
        expires_at=expires_at,
        scope=None,
    )
    response = _token_out(TokenView(answer, "at-\u2028-\x00-ok", expires_at))
    assert response.headers["content-length"] == str(len(response.body))
    assert response.headers["cache-control"] == "no-store"
    body = json.loads(response.body)
    assert body == {
        "provider": "custom",
        "branch_id": 'branch "1" \\ ü',
        "access_token": "at-\u2028-\x00-ok",
        "token_type": "Bearer",
        "expires_at": "2026-11-25T12:00:00+00:00",
        "scope": None,
    }
