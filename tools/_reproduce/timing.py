"""Cost of each stage of the reproduction: wall and CPU seconds, memory peaks."""

from __future__ import annotations

import logging
import resource
import sys
import time
import tracemalloc
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, List

logger = logging.getLogger("reproduce")


@dataclass
class StageRecord:
    """Cost of one stage: wall and CPU seconds, tracemalloc peak, ru_maxrss after it."""

    dataset: str
    stage: str
    wall_s: float
    cpu_s: float
    traced_peak_mib: float
    maxrss_mib: float
    note: str = ""


def maxrss_mib() -> float:
    """The process's ``ru_maxrss`` in MiB (a high-water mark over the whole run so far)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1 << 20) if sys.platform == "darwin" else rss / 1024.0


def cpu_seconds() -> float:
    """User + system CPU seconds of the process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class StageTimer:
    """Records :class:`StageRecord` s; ``with timer("set", "stage"): ...``.

    ``tracemalloc`` must be running for the peaks to mean anything.
    """

    def __init__(self) -> None:
        self.records: List[StageRecord] = []

    @contextmanager
    def __call__(self, dataset: str, stage: str, note: str = "") -> Iterator[None]:
        logger.info("[%s] %s ...", dataset, stage)
        tracemalloc.reset_peak()
        t0, c0 = time.perf_counter(), cpu_seconds()
        yield
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
        peak = tracemalloc.get_traced_memory()[1] / (1 << 20)
        self.records.append(StageRecord(dataset, stage, wall, cpu, peak, maxrss_mib(), note))
        logger.info("[%s] %s: %.1f s wall, %.1f s CPU, peak %.0f MiB", dataset, stage, wall, cpu, peak)
