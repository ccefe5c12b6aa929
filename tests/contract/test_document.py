"""The OpenAPI document describes what the service does: ids, security, errors, names."""

from __future__ import annotations

import json
import re
from http import HTTPStatus
from typing import Any

import jsonschema

from app.core import permissions
from tests.contract.conftest import openapi_document

DOCUMENT = openapi_document()
OPERATIONS = [
    (path, method, operation)
    for path, methods in DOCUMENT["paths"].items()
    for method, operation in methods.items()
]


def test_every_operation_has_a_readable_unique_id() -> None:
    ids = [operation["operationId"] for _, _, operation in OPERATIONS]
    assert len(ids) == len(set(ids))
    for operation_id in ids:
        assert re.fullmatch(r"[a-z]+-[a-z]+(-[a-z]+)*", operation_id), operation_id


def test_schema_names_are_plain_and_fastapis_validation_error_is_gone() -> None:
    names = set(DOCUMENT["components"]["schemas"])
    assert not [name for name in names if "__" in name]
    assert "HTTPValidationError" not in names and "ValidationError" not in names
    assert "HTTPValidationError" not in str(DOCUMENT)


def scheme_of(name: str) -> dict[str, Any]:
    scheme: dict[str, Any] = DOCUMENT["components"]["securitySchemes"][name]
    return scheme


def test_authenticated_operations_use_the_bearer_scheme_and_public_ones_none() -> None:
    scheme = DOCUMENT["components"]["securitySchemes"]["bearer"]
    assert scheme == {**scheme, "type": "http", "scheme": "bearer"}
    assert DOCUMENT["security"] == [{"bearer": []}]
    for path, method, operation in OPERATIONS:
        entry = permissions.PERMISSIONS[permissions.operation_key(method, path)]
        if path == "/metrics":  # open, or the scrape token when METRICS_BEARER_TOKEN is set
            assert operation["security"] == [{}, {"metricsToken": []}]
            assert "METRICS_BEARER_TOKEN" in scheme_of("metricsToken")["description"]
        elif entry.rule.public:
            assert operation["security"] == [], path
        else:
            assert "security" not in operation, path  # the document's default: bearer
            assert "401" in operation["responses"], path


def _error_schema(response: dict[str, Any]) -> str:
    ref: str = response["content"]["application/json"]["schema"]["$ref"]
    return ref.rsplit("/", 1)[-1]


_OWN_REPORTS = {"/api/v1/health": "HealthReport", "/readyz": "Readiness"}


def test_every_error_status_declares_the_real_error_body() -> None:
    for path, method, operation in OPERATIONS:
        for status, response in operation["responses"].items():
            if not status.startswith(("4", "5")):
                continue
            if status == "503" and path in _OWN_REPORTS:
                # Health and readiness answer their own report when unwell, as when well.
                assert _error_schema(response) == _OWN_REPORTS[path], path
                assert _error_schema(operation["responses"]["200"]) == _OWN_REPORTS[path]
                continue
            expected = "InvalidFieldsResponse" if status == "422" else "ErrorResponse"
            assert _error_schema(response) == expected, (path, method, status)
            if status in ("429", "503"):
                assert "Retry-After" in response["headers"], (path, method, status)


def test_operations_with_input_declare_422_and_bodies_413() -> None:
    for path, method, operation in OPERATIONS:
        responses = operation["responses"]
        if operation.get("parameters") or "requestBody" in operation:
            assert "422" in responses, (path, method)
        if "requestBody" in operation:
            assert "413" in responses, (path, method)
        assert "431" in responses and "429" in responses, (path, method)


def test_the_error_body_is_documented_with_its_fields() -> None:
    schemas = DOCUMENT["components"]["schemas"]
    error = schemas["ErrorResponse"]
    assert set(error["required"]) == {"error", "detail"}
    fields = schemas["InvalidFieldsResponse"]["properties"]["fields"]
    assert fields["items"]["$ref"].endswith("/FieldError")


def test_metrics_is_documented_as_prometheus_text() -> None:
    content = DOCUMENT["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(content) == ["text/plain"]


def test_every_operation_has_a_summary_and_a_description() -> None:
    for path, method, operation in OPERATIONS:
        assert operation.get("summary"), (path, method)
        assert operation.get("description"), (path, method)
        # Written for the operation, not FastAPI's default (the function's name, title-cased).
        default = operation["operationId"].split("-", 1)[1].replace("-", " ").title()
        assert operation["summary"] != default, (path, method)


def test_every_response_has_a_description_more_than_its_status_phrase() -> None:
    for path, method, operation in OPERATIONS:
        for status, response in operation["responses"].items():
            phrase = HTTPStatus(int(status)).phrase
            assert response["description"] not in ("", phrase), (path, method, status)


def test_every_parameter_has_a_description() -> None:
    undescribed = [
        (method, path, parameter["name"])
        for path, method, operation in OPERATIONS
        for parameter in operation.get("parameters", [])
        if not parameter.get("description")
    ]
    assert undescribed == []


def test_every_field_of_every_schema_has_a_description() -> None:
    undescribed = [
        f"{name}.{field}"
        for name, schema in DOCUMENT["components"]["schemas"].items()
        for field, spec in schema.get("properties", {}).items()
        if not spec.get("description")
    ]
    assert undescribed == []


def _body_examples(media: dict[str, Any]) -> list[Any]:
    """The examples a request body offers: its own, or those of the models it names."""
    if "examples" in media:
        return [example["value"] for example in media["examples"].values()]
    schema = media["schema"]
    members = schema.get("anyOf") or schema.get("oneOf") or [schema]
    examples: list[Any] = []
    for member in members:
        if "$ref" in member:
            named = DOCUMENT["components"]["schemas"][member["$ref"].rsplit("/", 1)[-1]]
            examples.extend(named.get("examples", []))
    return examples


def test_every_request_body_has_an_example_its_schema_accepts() -> None:
    for path, method, operation in OPERATIONS:
        if "requestBody" not in operation:
            continue
        for media in operation["requestBody"]["content"].values():
            examples = _body_examples(media)
            assert examples, (method, path)
            validator = jsonschema.Draft202012Validator(
                {**media["schema"], "components": DOCUMENT["components"]}
            )
            for example in examples:
                errors = [error.message for error in validator.iter_errors(example)]
                assert errors == [], (method, path, errors)


# Words that belong to the code's own notes (measurements, source paths, to-dos), not to text
# published for the people who call the API. The routes' docstrings keep such notes after a
# form feed, which FastAPI leaves out of the document.
_INTERNAL = re.compile(r"\bbench\b|µs|\bTODO\b|\bFIXME\b|\bXXX\b|\bapp/|\btests/|\.py\b")


def test_the_published_text_carries_no_internal_notes() -> None:
    found = sorted(set(_INTERNAL.findall(json.dumps(DOCUMENT, ensure_ascii=False))))
    assert found == []
