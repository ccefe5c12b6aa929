"""Progress of a long command: a bar on a terminal (tqdm), plain lines otherwise (logs, CI)."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Never, TextIO

from tqdm import tqdm

# Plain lines at most this often, so a log of a long copy stays readable.
LINE_INTERVAL_S = 2.0


class Progress:
    """`with Progress("copy usage_events", total=n) as bar: bar.advance(k)`; total may be None."""

    def __init__(self, label: str, total: int | None = None, *, stream: TextIO | None = None):
        self.label = label
        self.total = total
        self.done = 0
        self._stream = stream or sys.stderr
        self._bar: tqdm[Never] | None = None
        self._last_line = 0.0

    def __enter__(self) -> Progress:
        if self._stream.isatty():
            self._bar = tqdm(total=self.total, desc=self.label, unit="row", file=self._stream)
        return self

    def advance(self, count: int) -> None:
        self.done += count
        if self._bar is not None:
            self._bar.update(count)
            return
        now = time.monotonic()
        if now - self._last_line >= LINE_INTERVAL_S:
            self._last_line = now
            self._line()

    def _line(self) -> None:
        of = f"/{self.total}" if self.total is not None else ""
        print(f"{self.label}: {self.done}{of}", file=self._stream, flush=True)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.close()
        else:
            self._line()
