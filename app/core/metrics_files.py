"""Where the worker processes of `junction serve --workers N` keep their Prometheus figures.

Apart from app/core/metrics.py on purpose: prometheus_client picks in-memory or file-backed
values when it is imported, so `junction serve` must set the directory before anything imports
it (this module imports nothing of it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator

MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


@contextlib.contextmanager
def multiprocess_directory(workers: int) -> Iterator[str | None]:
    """For `junction serve`: with several workers (or `PROMETHEUS_MULTIPROC_DIR` set by the
    operator), a fresh directory for this start's metric files, in the environment the workers
    inherit, removed on the way out. Files left by an earlier start would be counted again."""
    parent = os.environ.get(MULTIPROCESS_DIR_ENV) or None
    if workers <= 1 and parent is None:
        yield None
        return
    directory = tempfile.mkdtemp(prefix="junction-metrics-", dir=parent)
    os.environ[MULTIPROCESS_DIR_ENV] = directory
    try:
        yield directory
    finally:
        if parent is None:
            os.environ.pop(MULTIPROCESS_DIR_ENV, None)
        else:
            os.environ[MULTIPROCESS_DIR_ENV] = parent
        shutil.rmtree(directory, ignore_errors=True)
