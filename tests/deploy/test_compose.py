"""docker-compose.yml: valid against the Compose Specification's schema, replicas behind a proxy
(no fixed host port on the app), pinned images, the proxy's config in the repository."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def _compose_schema() -> dict[str, Any]:
    # The compose-spec project's schema, as check-jsonschema vendors it (a dev dependency).
    vendored = resources.files("check_jsonschema") / "builtin_schemas/vendor/compose-spec.json"
    schema: dict[str, Any] = json.loads(vendored.read_text())
    return schema


def test_the_compose_file_is_valid_against_the_compose_spec_schema() -> None:
    schema = _compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(_compose()), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_the_schema_check_catches_a_broken_file() -> None:
    broken = _compose()
    broken["services"]["app"]["restart"] = ["always"]  # a string in the spec
    broken["services"]["app"]["depends_on"]["redis"]["condition"] = "when_it_likes"
    schema = _compose_schema()
    errors = list(jsonschema.validators.validator_for(schema)(schema).iter_errors(broken))
    assert len(errors) >= 2


def test_the_app_publishes_no_host_port_so_it_scales() -> None:
    app = _compose()["services"]["app"]
    assert "ports" not in app, "a fixed host port stops `docker compose up --scale app=3`"
    assert "container_name" not in app
    assert [str(port) for port in app["expose"]] == ["8000"]


def test_a_proxy_publishes_the_port_and_reaches_the_app() -> None:
    proxy = _compose()["services"]["proxy"]
    (published,) = proxy["ports"]
    host, container = str(published).rsplit(":", 1)
    assert host == "${JUNCTION_PORT:-8000}"
    mounts = [volume.split(":") for volume in proxy["volumes"]]
    (config,) = [m for m in mounts if m[1] == "/etc/nginx/nginx.conf"]
    assert config[2] == "ro"
    text = (ROOT / config[0]).read_text()
    assert re.search(rf"listen {container};", text)
    assert "http://app:8000" in text
    # Docker's DNS re-read, so replicas added by --scale receive requests.
    assert "resolver 127.0.0.11" in text
    # /metrics stays off the public port.
    assert re.search(r"location = /metrics \{\s*return 404;", text)


@pytest.mark.parametrize("service", ["postgres", "redis", "proxy"])
def test_third_party_images_are_pinned_to_a_release(service: str) -> None:
    image = _compose()["services"][service]["image"]
    name, _, tag = image.partition(":")
    assert re.fullmatch(r"\d+\.\d+(\.\d+)?(-[a-z0-9.]+)?", tag), f"{image}: not a pinned release"


def test_the_app_and_migrate_run_the_image_built_here() -> None:
    services = _compose()["services"]
    assert services["app"]["image"] == services["migrate"]["image"]
    assert services["app"]["image"].startswith("junction:")
    assert services["migrate"]["command"] == ["junction", "migrate"]
    assert services["app"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )


def test_the_app_runs_with_a_read_only_root_filesystem() -> None:
    app = _compose()["services"]["app"]
    assert app["read_only"] is True
    assert app["tmpfs"] == ["/tmp"]
