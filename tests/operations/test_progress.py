"""A long command's progress: a bar on a terminal, plain lines (at most every LINE_INTERVAL_S,
and a last one) everywhere else."""

from __future__ import annotations

import io

import pytest

from app.operations import progress
from app.operations.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_progress_is_plain_lines_with_the_count_and_total(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = iter([100.0, 100.5, 103.0])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    out = io.StringIO()
    with Progress("copy usage_events", total=30, stream=out) as bar:
        bar.advance(10)  # the first line
        bar.advance(10)  # 0.5 s later: no line
        bar.advance(5)  # 3 s after the first: a line
    assert out.getvalue().splitlines() == [
        "copy usage_events: 10/30",
        "copy usage_events: 25/30",
        "copy usage_events: 25/30",  # the last line, when the work ends
    ]


def test_without_a_total_the_lines_count_alone() -> None:
    out = io.StringIO()
    with Progress("checksum workspaces", stream=out) as bar:
        bar.advance(7)
    assert out.getvalue().splitlines()[-1] == "checksum workspaces: 7"


def test_on_a_terminal_progress_is_a_bar_not_lines() -> None:
    out = _Terminal()
    with Progress("rewrap", total=4, stream=out) as bar:
        bar.advance(4)
    drawn = out.getvalue()
    assert "rewrap" in drawn and "4/4" in drawn and "100%" in drawn
    assert "rewrap: 4/4\n" not in drawn
