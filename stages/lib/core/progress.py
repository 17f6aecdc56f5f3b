"""Progress bars that work with or without tqdm (the TensorRT interpreter has none)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


def progress(items: Iterable[T], total: int | None = None, desc: str = "") -> Iterator[T]:
    """Wrap an iterable with a progress bar on stderr (tqdm if present, else log lines)."""
    try:
        from tqdm import tqdm
    except ImportError:
        yield from _log_progress(items, total, desc)
        return
    yield from tqdm(items, total=total, desc=desc, file=sys.stderr, dynamic_ncols=True, mininterval=1.0, leave=False)


def _log_progress(items: Iterable[T], total: int | None, desc: str) -> Iterator[T]:
    start = last = time.monotonic()
    for i, item in enumerate(items, 1):
        yield item
        now = time.monotonic()
        if now - last >= 5.0:
            last = now
            of = f"/{total}" if total else ""
            log.info("%s: %d%s (%.0f s)", desc, i, of, now - start)
