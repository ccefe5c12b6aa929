"""Structured logging: JSON outside dev, a request id on every line, secrets redacted."""

from __future__ import annotations

import json
import logging
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

_REDACTED = "[REDACTED]"

# Shapes of secrets that may slip into a message: bearer tokens, JWTs, key=value pairs whose key
# names a secret (in query strings, form bodies, JSON and reprs), and Junction's own ciphertexts.
_PATTERNS = [
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9\-._~+/]+=*"),
    re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"),
    re.compile(
        r"(?i)([\"']?(?:access_token|refresh_token|id_token|client_secret|api_key|api_secret|"
        r"password|secret|code_verifier|code|authorization)[\"']?\s*[=:]\s*[\"']?)"
        r"([^\"'&\s,}]+)"
    ),
    re.compile(r"\bv1\.[A-Za-z0-9]+\.[A-Za-z0-9_-]{16,}"),
]


class SecretRegistry:
    """Exact values known to be secret (keys, the JWT secret, test sentinels) are always masked."""

    def __init__(self) -> None:
        self._values: set[str] = set()

    def add(self, value: str | None) -> None:
        if value and len(value) >= 6:
            self._values.add(value)

    def redact(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, _REDACTED)
        for pattern in _PATTERNS:
            if pattern.groups >= 2 or pattern.groups == 1:
                text = pattern.sub(lambda m: m.group(1) + _REDACTED, text)
            else:
                text = pattern.sub(_REDACTED, text)
        return text


secrets = SecretRegistry()


def redact(text: str) -> str:
    return secrets.redact(text)


def _redact_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # a malformed format string must not hide the record
        message = str(record.msg)
    record.msg = redact(message)
    record.args = None
    if record.exc_info:
        formatted = logging.Formatter().formatException(record.exc_info)
        record.exc_text = redact(formatted)
        record.exc_info = None
    record.request_id = request_id_var.get()


_base_factory = logging.getLogRecordFactory()


def _redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    # Redact when the record is made, so every handler (files, test capture, uvicorn's) sees the
    # same masked text; a filter on one handler would leave the others exposed.
    record = _base_factory(*args, **kwargs)
    _redact_record(record)
    return record


def install_redaction() -> None:
    if logging.getLogRecordFactory() is not _redacting_factory:
        logging.setLogRecordFactory(_redacting_factory)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id:
            entry["request_id"] = request_id
        for key in ("method", "path", "status", "duration_ms"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str)


def _escape_table(keep: str = "") -> dict[int, str]:
    codes = [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029]  # C0, DEL, C1, line/para sep
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
    return {
        code: named.get(chr(code)) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        for code in codes
        if chr(code) not in keep
    }


# Text a client chooses (a path with %0A, a header echoed in an error) must not start a line of
# its own that reads like another record: control characters are written as escapes.
_ONE_LINE = _escape_table()
# Tracebacks keep their line breaks; each of their lines is indented (below) instead.
_MULTI_LINE = _escape_table(keep="\n")


class TextFormatter(logging.Formatter):
    """One line per record: `time level logger [request id] message`, control characters
    escaped; a traceback follows on lines that start with whitespace, so no line but the
    first of a record starts with a timestamp."""

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        request_id = getattr(record, "request_id", None)
        line = (
            f"{self.formatTime(record)} {record.levelname:<7} {record.name} "
            f"[{request_id}] {record.getMessage()}"
        ).translate(_ONE_LINE)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        for block in (record.exc_text, record.stack_info):
            if block:
                line += "\n" + _indented(block.translate(_MULTI_LINE))
        return line


def _indented(block: str) -> str:
    return "\n".join("    " + text for text in block.splitlines())


def configure_logging(level: str = "INFO", json_logs: bool = False) -> None:
    install_redaction()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_junction", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._junction = True  # type: ignore[attr-defined]
    handler.setFormatter(JsonFormatter() if json_logs else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn.access",):
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("httpx", "httpcore"):
        # httpx logs full URLs at INFO; some carry codes or tokens in their query strings.
        logging.getLogger(name).setLevel(logging.WARNING)


# Masking starts when the package is imported, before any app or handler is configured.
install_redaction()


def uvicorn_log_config(level: str = "INFO", json_logs: bool = False) -> dict[str, Any]:
    """uvicorn's own loggers (start-up, shutdown, worker supervision, errors) written with
    Junction's formatters, JSON outside dev, instead of uvicorn's plain text: `junction serve`
    passes this as `log_config`. The app's loggers are configured by `configure_logging`."""
    formatter = "json" if json_logs else "text"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {"()": f"{__name__}.JsonFormatter"},
            "text": {"()": f"{__name__}.TextFormatter"},
        },
        "handlers": {
            "uvicorn": {
                "class": "logging.StreamHandler",
                "formatter": formatter,
                "stream": "ext://sys.stderr",
            },
        },
        "loggers": {
            "uvicorn": {"handlers": ["uvicorn"], "level": level.upper(), "propagate": False},
            "uvicorn.error": {"level": level.upper()},
            # Requests are logged by the app, with the request id (junction.access).
            "uvicorn.access": {"handlers": ["uvicorn"], "level": "WARNING", "propagate": False},
        },
    }
