"""TypeScript types generated from the document (openapi-typescript) type-check (tsc, strict) on
a small frontend example that reads a token and an error body."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

TYPESCRIPT = Path(__file__).parent / "typescript"
BIN = TYPESCRIPT / "node_modules" / ".bin"


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=TYPESCRIPT, capture_output=True, text=True, timeout=300, check=False
    )


def test_generated_types_check_against_the_example(openapi_file: Path, tmp_path: Path) -> None:
    assert (BIN / "tsc").exists(), (
        "the TypeScript tools are missing: `make test` installs them (npm ci in "
        f"{TYPESCRIPT.relative_to(Path.cwd())})"
    )
    work = tmp_path / "typescript"
    work.mkdir()
    for name in ("example.ts", "tsconfig.json"):
        shutil.copy(TYPESCRIPT / name, work / name)
    generated = run(
        str(BIN / "openapi-typescript"), str(openapi_file), "-o", str(work / "schema.ts")
    )
    assert generated.returncode == 0, generated.stdout + generated.stderr
    assert "warn" not in (generated.stdout + generated.stderr).lower()
    checked = run(str(BIN / "tsc"), "-p", str(work))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_example_fails_when_the_error_body_changes(openapi_file: Path, tmp_path: Path) -> None:
    """The check has teeth: an error body without `detail` breaks the example."""
    work = tmp_path / "typescript"
    work.mkdir()
    for name in ("example.ts", "tsconfig.json"):
        shutil.copy(TYPESCRIPT / name, work / name)
    broken = openapi_file.read_text().replace('"detail"', '"explanation"')
    (work / "openapi.json").write_text(broken)
    run(str(BIN / "openapi-typescript"), str(work / "openapi.json"), "-o", str(work / "schema.ts"))
    checked = run(str(BIN / "tsc"), "-p", str(work))
    assert checked.returncode != 0
    assert "detail" in checked.stdout
