"""The README's first-screen walkthrough, run as written: `junction dev-provider` in a process of
its own, then the shell block of curl commands against a served Junction (`junction serve`).

Only addresses and the file path are changed (to free ports and a temporary file), so a README
edit that breaks the walkthrough breaks this test.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IS_POSTGRES, REDIS_URL, free_port
from tests.replica_server import ReplicaServer

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- tests/devtools/test_walkthrough.py runs the next two blocks as they are written -->"


def readme_blocks() -> tuple[str, str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert MARKER in readme, "the README lost its walkthrough marker"
    blocks = re.findall(r"```sh\n(.*?)```", readme.split(MARKER, 1)[1], re.DOTALL)
    return blocks[0].strip(), blocks[1]


def json_documents(output: str) -> list[Any]:
    decoder = json.JSONDecoder()
    documents, position = [], 0
    while (start := output.find("{", position)) != -1:
        document, position = decoder.raw_decode(output, start)
        documents.append(document)
    return documents


@pytest.fixture
def served(database_url: str) -> Iterator[ReplicaServer]:
    server = ReplicaServer(database_url, REDIS_URL if IS_POSTGRES else None, junction_serve=True)
    try:
        yield server
    finally:
        server.stop()


def test_the_readme_walkthrough_connects_reads_and_refreshes(
    served: ReplicaServer, tmp_path: Path
) -> None:
    provider_command, session = readme_blocks()
    provider_port = free_port()
    client_file = tmp_path / "dev-client.json"
    bindir = str(Path(sys.executable).parent)

    def localize(text: str) -> str:
        return (
            text.replace("127.0.0.1:8000", f"127.0.0.1:{served.port}")
            .replace("--port 9000", f"--port {provider_port}")
            .replace("var/dev-client.json", str(client_file))
            .replace(".venv/bin/", bindir + "/")
        )

    assert "junction dev-provider" in provider_command
    provider = subprocess.Popen(
        ["bash", "-c", "exec " + localize(provider_command)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert provider.stdout is not None
        printed: list[str] = []
        deadline = time.monotonic() + 30
        while not printed or not printed[-1].startswith("Ctrl-C stops it."):
            assert time.monotonic() < deadline, "".join(printed)
            line = provider.stdout.readline()
            assert line, "dev-provider exited: " + "".join(printed)
            printed.append(line)
        banner = "".join(printed)
        registration = json.loads(client_file.read_text())
        # What to register is printed: client id, secret and URLs.
        for value in (
            registration["client_id"],
            registration["client_secret"],
            registration["token_url"],
        ):
            assert value in banner
        assert registration["redirect_uri"] == (
            f"http://127.0.0.1:{served.port}/token-management/auth/callback"
        )

        run = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", localize(session)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        connected, fresh, refreshed = json_documents(run.stdout)
        assert connected["status"] == "connected"
        assert connected["provider"] == fresh["provider"] == "dev_provider"
        assert fresh["branch_id"] == refreshed["branch_id"] == "me"
        assert fresh["access_token"].startswith("at-")
        assert refreshed["access_token"].startswith("at-")
        assert refreshed["access_token"] != fresh["access_token"]
    finally:
        provider.send_signal(signal.SIGTERM)
        try:
            exit_code = provider.wait(timeout=10)
        except subprocess.TimeoutExpired:
            provider.kill()
            raise
    assert exit_code == 0
