"""Time jitted functions with compile time kept apart from run time."""

import statistics
import time
from typing import NamedTuple

import jax

from lecture_utils.compile_cache import persistent_cache_bypassed


class Timing(NamedTuple):
    """Wall times in seconds.

    Attributes:
        compile_s: tracing, lowering and XLA compilation, measured once.
        run_s: median time of one call of the compiled function.
        samples: how many timed samples the median is over.
    """

    compile_s: float
    run_s: float
    samples: int


def _median_call_time(call, repeat: int, min_sample_s: float) -> float:
    """Median over ``repeat`` samples; each sample loops enough calls to last ``min_sample_s``."""
    call()  # warm-up
    start = time.perf_counter()
    call()
    once = max(time.perf_counter() - start, 1e-9)
    number = max(1, int(min_sample_s / once))
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            call()
        samples.append((time.perf_counter() - start) / number)
    return statistics.median(samples)


def time_jitted(fn, *args, repeat: int = 7, min_sample_s: float = 0.02) -> Timing:
    """Compile ``jax.jit(fn)`` for ``args`` and time it, compile and run apart.

    ``fn`` may already be jitted. ``compile_s`` is a real compile, as in a
    fresh process: JAX's in-memory caches are cleared first, and the
    persistent compilation cache (:mod:`lecture_utils.compile_cache`) is
    neither read nor written while compiling. Each call is followed by
    ``block_until_ready`` so that asynchronous dispatch does not hide work.
    """
    jax.clear_caches()
    with persistent_cache_bypassed():
        start = time.perf_counter()
        compiled = jax.jit(fn).lower(*args).compile()
        compile_s = time.perf_counter() - start
    run_s = _median_call_time(
        lambda: jax.block_until_ready(compiled(*args)), repeat, min_sample_s
    )
    return Timing(compile_s, run_s, repeat)


def time_python(fn, *args, repeat: int = 7, min_sample_s: float = 0.02) -> float:
    """Median seconds per call of a plain Python/NumPy function."""
    return _median_call_time(lambda: fn(*args), repeat, min_sample_s)


def compiled_temp_bytes(fn, *args) -> int:
    """Bytes of scratch memory XLA reserves for ``jax.jit(fn)(*args)``."""
    return jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes
