"""requirements.lock and requirements-dev.lock: exact versions with hashes, no download host, and
every dependency pyproject.toml names, at a version it allows."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCKS = {"requirements.lock": None, "requirements-dev.lock": "dev"}

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^ ;\\]+)")


def _pins(lock: str) -> dict[str, str]:
    pins = {}
    for line in (ROOT / lock).read_text().splitlines():
        match = _PIN.match(line)
        if match:
            pins[canonicalize_name(match.group(1))] = match.group(3)
    return pins


def _required(extra: str | None) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = list(project["dependencies"])
    if extra:
        names += project["optional-dependencies"][extra]
    return [Requirement(name) for name in names]


@pytest.mark.parametrize("lock", LOCKS)
def test_the_lock_names_no_download_host(lock: str) -> None:
    text = (ROOT / lock).read_text()
    for option in ("--index-url", "--extra-index-url", "--find-links", "-i ", "-f "):
        assert not any(line.lstrip().startswith(option) for line in text.splitlines()), option
    assert not re.search(r"[a-z][a-z0-9+.-]*://", text), "a URL in the lock"
    assert " @ " not in text, "a direct reference (name @ url) in the lock"


@pytest.mark.parametrize("lock", LOCKS)
def test_every_locked_package_has_an_exact_version_and_hashes(lock: str) -> None:
    # Each requirement is one logical line: `name==version \` then `--hash=sha256:...` lines.
    logical = (ROOT / lock).read_text().replace("\\\n", " ")
    entries = [line for line in logical.splitlines() if line and not line.startswith(" #")]
    entries = [line for line in entries if not line.lstrip().startswith("#")]
    assert entries
    for entry in entries:
        assert _PIN.match(entry), f"not an exact pin: {entry[:80]}"
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", entry), f"no hash: {entry[:80]}"


@pytest.mark.parametrize(("lock", "extra"), LOCKS.items())
def test_the_lock_covers_every_dependency_of_pyproject(lock: str, extra: str | None) -> None:
    pins = _pins(lock)
    for requirement in _required(extra):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is in pyproject.toml but not in {lock}"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{lock} pins {name}=={pins[name]}, outside pyproject's {requirement.specifier}:"
            " run `make lock`"
        )


def test_the_dev_lock_pins_the_runtime_packages_at_the_same_versions() -> None:
    runtime, dev = _pins("requirements.lock"), _pins("requirements-dev.lock")
    differing = {name: (v, dev.get(name)) for name, v in runtime.items() if dev.get(name) != v}
    assert not differing, f"the two locks disagree (run `make lock`): {differing}"
