"""An operator's command whose database cannot be reached ends with one line and exit 3 (the
code every command gives a failed database), not a traceback whose exit 1 would mean "values
left" or "not confirmed"; reset with no terminal to answer from is not confirmed."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.cli import main
from app.core.crypto import Keyring
from app.operations.databases import EXIT_FAILED
from app.operations.engine import sqlite_worker_threads
from tests.conftest import free_port


def _environment(monkeypatch: pytest.MonkeyPatch, database_url: str) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("ENVIRONMENT", "dev")
    monkeypatch.setenv("ENCRYPTION_KEYS", f"k1:{Keyring.generate_key()}")
    monkeypatch.setenv("AUTH_JWT_SECRET", "s" * 48)
    monkeypatch.delenv("REDIS_URL", raising=False)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
@pytest.mark.parametrize(
    "argv", [["keys", "status"], ["keys", "rewrap"], ["reset", "--yes"]], ids=" ".join
)
def test_a_command_whose_database_cannot_be_reached_exits_3_in_one_line(
    kind: str,
    argv: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = (
        f"sqlite+aiosqlite:///{tmp_path}/no-such-directory/junction.db"
        if kind == "sqlite"
        else f"postgresql+asyncpg://postgres:pw-not-printed@127.0.0.1:{free_port()}/junction"
    )
    _environment(monkeypatch, url)
    assert main(argv) == EXIT_FAILED
    err = capsys.readouterr().err
    assert err.startswith(f"junction {argv[0]}: database failed: ")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "pw-not-printed" not in err
    # aiosqlite stops the worker thread of a connection it could not open without waiting for
    # it; the thread then hands its last result to the command's event loop, which must still
    # be running (else "Event loop is closed" is printed from the thread after the one line).
    assert not sqlite_worker_threads()


def test_reset_with_no_terminal_to_answer_is_not_confirmed(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _environment(monkeypatch, database_url)

    def closed_stdin(prompt: str) -> str:
        raise EOFError

    monkeypatch.setattr("builtins.input", closed_stdin)
    assert main(["reset"]) == 1
    assert "nothing removed" in capsys.readouterr().out
