"""A bounded schemathesis run against a served Junction: every check that applies, a handful of
generated requests per operation; any 5xx, undeclared status, or answer that breaks its declared
schema fails it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import TokenFactory
from tests.contract.conftest import openapi_document

CONFIG = Path(__file__).parent / "schemathesis.toml"
# Per operation; with the examples phase, a run takes about half a minute.
EXAMPLES = 5


def test_the_service_keeps_its_documented_contract(
    served: str, make_token: TokenFactory, tmp_path: Path
) -> None:
    environment = {
        **os.environ,
        # An admin of every tenant, so the operators' routes are reached too.
        "JUNCTION_CONTRACT_TOKEN": make_token(tenants=["*"], roles=["service", "admin"]),
        "JUNCTION_CONTRACT_REVOKED_TOKEN": make_token(tenants=["contract-t"], roles=["service"]),
    }
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "st"),
            "--config-file",
            str(CONFIG),
            "run",
            f"{served}/openapi.json",
            "--checks",
            "all",
            "--phases",
            "examples,fuzzing",
            "--max-examples",
            str(EXAMPLES),
            "--seed",
            "20261201",
            "--no-shrink",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=environment,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    # Every operation was reached with a token that works: none answered only 401 or 403.
    assert "Authentication failed" not in output, output[-3000:]
    operations = sum(len(methods) for methods in openapi_document()["paths"].values())
    tested = re.search(r"Tested: (\d+)", output)
    assert tested is not None and int(tested.group(1)) == operations, output[-3000:]
