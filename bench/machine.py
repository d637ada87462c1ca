"""The machine's speed, printed first by every benchmark (machines of this kind differ ~3x
between days, so a figure means little without it)."""

from __future__ import annotations

import time

import numpy as np


def machine_speed(size: int = 2048, repeats: int = 3) -> float:
    """GFLOP/s of a ``size`` x ``size`` float32 matmul, after one untimed warm-up."""
    a = np.random.default_rng(0).random((size, size), dtype=np.float32)
    a @ a
    started = time.perf_counter()
    for _ in range(repeats):
        a @ a
    return repeats * 2 * size**3 / (time.perf_counter() - started) / 1e9
