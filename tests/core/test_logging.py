"""Secrets never reach a log line: known values, bearer tokens and key=value pairs are masked."""

from __future__ import annotations

import io
import logging
import sys

import httpx
import pytest

from app.core.logging import TextFormatter, secrets
from tests.conftest import TokenFactory, bearer

SENTINEL = "SENTINEL-secret-7f3a9c"


def test_a_registered_secret_value_is_masked_in_any_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    secrets.add(SENTINEL)
    with caplog.at_level(logging.INFO):
        logging.getLogger("junction.test").info("calling provider with %s", SENTINEL)
    assert SENTINEL not in caplog.text
    assert "[REDACTED]" in caplog.text


@pytest.mark.parametrize(
    "message",
    [
        "Authorization: Bearer abc.def-ghi_jkl",
        "POST body grant_type=refresh_token&refresh_token=rt-8d7f6e5c&client_id=x",
        '{"access_token": "at-1a2b3c4d", "token_type": "Bearer"}',
        "client_secret='cs-99887766'",
    ],
)
def test_secret_shaped_values_are_masked(caplog: pytest.LogCaptureFixture, message: str) -> None:
    with caplog.at_level(logging.INFO):
        logging.getLogger("junction.test").info(message)
    for leaked in ("abc.def-ghi_jkl", "rt-8d7f6e5c", "at-1a2b3c4d", "cs-99887766"):
        assert leaked not in caplog.text


def test_an_exception_carrying_a_secret_is_masked(caplog: pytest.LogCaptureFixture) -> None:
    secrets.add(SENTINEL)
    with caplog.at_level(logging.INFO):
        try:
            raise ValueError(f"provider echoed {SENTINEL}")
        except ValueError:
            logging.getLogger("junction.test").exception("refresh failed")
    assert SENTINEL not in caplog.text
    assert "refresh failed" in caplog.text


async def test_a_bearer_token_used_in_requests_never_reaches_the_logs(
    client: httpx.AsyncClient, make_token: TokenFactory, caplog: pytest.LogCaptureFixture
) -> None:
    token = make_token(roles=["admin"])
    with caplog.at_level(logging.DEBUG):
        await client.get("/api/admin/workspaces/tenant-a", headers=bearer(token))
        await client.post("/auth/revoke", headers=bearer(token))
        await client.get("/api/admin/workspaces/tenant-a", headers=bearer(token))
    assert token not in caplog.text
    assert token.split(".")[2] not in caplog.text


async def test_each_request_logs_one_access_line_with_its_request_id(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="junction.access"):
        response = await client.get("/livez?code=abc123")
    lines = [r for r in caplog.records if r.name == "junction.access"]
    assert len(lines) == 1
    assert lines[0].request_id == response.headers["x-request-id"]  # type: ignore[attr-defined]
    assert "abc123" not in caplog.text


def test_json_lines_carry_level_logger_message_and_request_id() -> None:
    import json

    from app.core.logging import JsonFormatter, request_id_var

    token = request_id_var.set("req-42")
    try:
        record = logging.getLogger("junction.test").makeRecord(
            "junction.test", logging.INFO, __file__, 1, "hello %s", ("world",), None
        )
    finally:
        request_id_var.reset(token)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "hello world"
    assert entry["level"] == "info"
    assert entry["request_id"] == "req-42"


async def test_a_newline_in_a_request_path_does_not_forge_a_log_line(
    client: httpx.AsyncClient,
) -> None:
    # The service's text format on a stream of the test's own (the app's handler writes to the
    # stderr of whichever capture was active when the app started).
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter())
    access = logging.getLogger("junction.access")
    access.addHandler(handler)
    try:
        forged = "2026-01-01 00:00:00,000 INFO    junction.auth [x] admin login accepted"
        await client.get("/no-such-page%0D%0A" + forged.replace(" ", "%20"))
    finally:
        access.removeHandler(handler)
    [line] = stream.getvalue().splitlines()
    assert "GET /no-such-page\\r\\n2026-01-01" in line
    assert not line.startswith("2026-01-01")


def test_the_text_format_escapes_control_characters_in_the_message() -> None:
    record = logging.LogRecord(
        "junction.test", logging.INFO, __file__, 1, "a %s b", ("x\n\r\t\x1b[31m\x85\u2028",), None
    )
    line = TextFormatter().format(record)
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert line.endswith("a x\\n\\r\\t\\x1b[31m\\x85\\u2028 b")


def test_a_traceback_cannot_start_a_line_of_its_own() -> None:
    try:
        raise ValueError("bad input\n2026-01-01 00:00:00,000 INFO    junction forged")
    except ValueError:
        record = logging.LogRecord(
            "junction.test", logging.ERROR, __file__, 1, "failed", None, sys.exc_info()
        )
    first, *rest = TextFormatter().format(record).split("\n")
    assert first.endswith("failed")
    assert rest and all(line.startswith("    ") for line in rest)
    assert any("junction forged" in line for line in rest)
