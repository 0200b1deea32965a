"""Helpers shared by the benchmark scripts: machine description and timing statistics."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from polypseg.runtime import provenance


def data_root() -> Path:
    """$POLYPSEG_DATA_ROOT, else the shared copy next to the repository."""
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "kvasir-seg"
    return Path(os.environ.get("POLYPSEG_DATA_ROOT") or default)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu
            )
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def git_sha() -> str:
    return provenance.git_sha()[:7]


def time_call(fn: Callable[[], object], runs: int, warmup: int = 5) -> dict[str, float]:
    """Median and p95 wall time in milliseconds over ``runs`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return {
        "median_ms": statistics.median(samples),
        "p95_ms": samples[int(0.95 * (len(samples) - 1))],
    }
