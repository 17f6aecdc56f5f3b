"""The one timing loop every backend is measured with.

A runner describes one iteration as a :class:`TimedOp` (enqueue + synchronise + which
CUDA stream, if any); :func:`measure` warms it up and times it:

* GPU ops: CUDA events recorded on the op's stream between back-to-back iterations, so a
  sample is the stream time of one iteration (launch gaps included, host clock excluded);
  the run's throughput is images over the span from the first to the last event.
* CPU ops (or ops that synchronise internally): host ``perf_counter`` around
  ``step(); sync()``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class TimedOp:
    step: Callable[[], object]  # its return value is ignored
    sync: Callable[[], None]
    stream: int | None
    timed: str
    cuda_graph: bool = False
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        for fn in reversed(self.cleanup):
            fn()
        self.cleanup.clear()


@dataclass(frozen=True)
class Timing:
    samples_ms: np.ndarray
    span_ms: float
    clock: str


MIN_STEPS = 10  # timed iterations, however long each takes


def _budget(op: TimedOp, warmup: int, iterations: int, max_seconds: float, min_steps: int) -> tuple[int, int]:
    """(warm-up steps, timed steps) for ``op``, judged from three synchronised probe steps
    (the first calls: lazy init, autotuning, graph upload): at most ``iterations`` timed
    steps, fewer when they would take longer than ``max_seconds``, never fewer than
    ``min_steps``; warm-up capped at a third of the budget."""
    probe = _host_times(op, 3)
    est_ms = max(float(np.median(probe[1:])), 1e-3)
    budget_ms = max_seconds * 1000.0
    return int(min(warmup, max(1, budget_ms / 3 / est_ms))), int(min(iterations, max(min_steps, budget_ms / est_ms)))


def measure(op: TimedOp, warmup: int, iterations: int, max_seconds: float) -> Timing:
    """Warm up, then time up to ``iterations`` iterations, fewer if they would take longer
    than ``max_seconds``; warm-up is capped at a third of that budget for slow cases."""
    warm, n = _budget(op, warmup, iterations, max_seconds, MIN_STEPS)
    for _ in range(warm):
        op.step()
    op.sync()
    if op.stream is None:
        samples = _host_times(op, n)
        return Timing(samples, float(samples.sum()), "host perf_counter, synchronised each iteration")
    return _event_times(op, n)


def _host_times(op: TimedOp, n: int) -> np.ndarray:
    out = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter()
        op.step()
        op.sync()
        out[i] = (time.perf_counter() - t0) * 1000.0
    return out


def _event_times(op: TimedOp, n: int) -> Timing:
    from .cuda import Event

    assert op.stream is not None
    events = [Event() for _ in range(n + 1)]
    try:
        events[0].record(op.stream)
        for i in range(n):
            op.step()
            events[i + 1].record(op.stream)
        events[-1].synchronize()
        op.sync()
        samples = np.array([events[i + 1].elapsed_ms(events[i]) for i in range(n)])
        span = events[-1].elapsed_ms(events[0])
    finally:
        for e in events:
            e.close()
    return Timing(samples, span, "CUDA events on the stream between back-to-back iterations")


def measure_span(op: TimedOp, warmup: int, iterations: int) -> float:
    """Wall time (ms) of ``iterations`` back-to-back steps and a final sync.

    For pipelined ops (several streams in flight) where per-iteration latency is not
    defined; the host clock is read only after synchronising.
    """
    for _ in range(warmup):
        op.step()
    op.sync()
    t0 = time.perf_counter()
    for _ in range(iterations):
        op.step()
    op.sync()
    return (time.perf_counter() - t0) * 1000.0


def span_budgeted(
    op: TimedOp, warmup: int, iterations: int, max_seconds: float, min_steps: int = MIN_STEPS
) -> tuple[float, int]:
    """(wall ms, steps) of :func:`measure_span`, with warm-up and steps bounded as in
    :func:`measure` (see :func:`_budget`)."""
    warm, n = _budget(op, warmup, iterations, max_seconds, min_steps)
    return measure_span(op, warm, n), n


def summarize(t: Timing, batch_size: int) -> dict[str, float | int | str]:
    s = t.samples_ms
    return {
        "latency_ms_p50": round(float(np.percentile(s, 50)), 5),
        "latency_ms_p90": round(float(np.percentile(s, 90)), 5),
        "latency_ms_p99": round(float(np.percentile(s, 99)), 5),
        "latency_ms_mean": round(float(s.mean()), 5),
        "latency_ms_min": round(float(s.min()), 5),
        "throughput_ips": round(batch_size * len(s) / (t.span_ms / 1000.0), 1),
        "iterations": int(len(s)),
        "clock": t.clock,
    }
