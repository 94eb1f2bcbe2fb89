"""Time code on two clocks, wall and process CPU, with a jitted function's compile apart from its runs.

The project's one timer: the lectures, the tests and the benchmarks import it.
Two clocks are read together: the wall clock (``time.perf_counter``) and the
CPU time of this process, all threads (``time.process_time``). On a shared
machine wall times grow with other processes' load and CPU times much less;
a call on one thread takes about its CPU time on an idle machine, a call or a
compilation on several threads less wall time than CPU time.
"""

import math
import statistics
import time
from typing import NamedTuple

import jax

from lecture_utils.compile_cache import persistent_cache_bypassed

__all__ = ["Stopwatch", "Timing", "compile_jitted", "compiled_temp_bytes", "time_calls",
           "time_interleaved", "time_jitted", "time_python"]


class Timing(NamedTuple):
    """Seconds of wall time and of CPU time (this process, all threads).

    Attributes:
        compile_s: wall time of tracing, lowering and XLA compilation, measured
            once; NaN where nothing was compiled (:func:`time_calls`).
        run_s: median wall time of one call.
        samples: how many timed samples the medians are over.
        compile_cpu_s: CPU time of the same compilation; NaN where none.
        run_cpu_s: median CPU time of one call.
    """

    compile_s: float
    run_s: float
    samples: int
    compile_cpu_s: float
    run_cpu_s: float


def _clocks():
    return time.perf_counter(), time.process_time()


class Stopwatch:
    """Wall and CPU seconds of a block of code, read once.

    Example:
        >>> with Stopwatch() as watch:
        ...     time.sleep(0.01)
        >>> watch.wall_s >= 0.01 > watch.cpu_s
        True
    """

    wall_s: float
    cpu_s: float

    def __enter__(self):
        self._start = _clocks()
        return self

    def __exit__(self, *exc_info):
        wall, cpu = _clocks()
        self.wall_s, self.cpu_s = wall - self._start[0], cpu - self._start[1]


def time_interleaved(calls: dict, repeat: int = 7, min_sample_s: float = 0.02) -> dict:
    """Median wall and CPU seconds per call of each of ``calls``, sampled in turn.

    After a warm-up call of each, every round takes one sample of every call,
    in a fixed order, so that a change in a shared machine's load falls on
    all of them rather than on whichever was being timed. Each sample loops a
    call enough times to last about ``min_sample_s`` of wall time (one call
    if ``min_sample_s <= 0``), so that the clocks' resolution and the loop's
    overhead do not count.

    Args:
        calls: name -> function of no arguments; a jitted call should block
            until its result is ready (``jax.block_until_ready``).
        repeat: rounds.

    Returns:
        name -> ``(wall_s, cpu_s)``, medians over the rounds.
    """
    if repeat < 1:
        raise ValueError(f"repeat must be at least 1, got {repeat}")
    number = {}
    for name, call in calls.items():
        call()  # warm-up
        number[name] = 1
        if min_sample_s > 0:
            with Stopwatch() as once:
                call()
            number[name] = max(1, int(min_sample_s / max(once.wall_s, 1e-9)))
    wall = {name: [] for name in calls}
    cpu = {name: [] for name in calls}
    for _ in range(repeat):
        for name, call in calls.items():
            with Stopwatch() as sample:
                for _ in range(number[name]):
                    call()
            wall[name].append(sample.wall_s / number[name])
            cpu[name].append(sample.cpu_s / number[name])
    return {name: (statistics.median(wall[name]), statistics.median(cpu[name]))
            for name in calls}


def compile_jitted(fn, *args):
    """``jax.jit(fn)`` compiled for ``args`` as in a fresh process, and the Stopwatch of it.

    JAX's in-memory caches are cleared first, and the persistent compilation
    cache (:mod:`lecture_utils.compile_cache`) is neither read nor written.
    Returns ``(compiled, watch)``; ``compiled(*args)`` runs the program.
    """
    jax.clear_caches()
    with persistent_cache_bypassed(), Stopwatch() as watch:
        compiled = jax.jit(fn).lower(*args).compile()
    return compiled, watch


def time_jitted(fn, *args, repeat: int = 7, min_sample_s: float = 0.02) -> Timing:
    """Compile ``jax.jit(fn)`` for ``args`` and time it, compile and run apart.

    ``fn`` may already be jitted. The compile is a real one, as in a fresh
    process (:func:`compile_jitted`). Each call is followed by
    ``block_until_ready`` so that asynchronous dispatch does not hide work.
    Run times are medians over ``repeat`` samples, each at least
    ``min_sample_s`` of wall time.
    """
    compiled, compiling = compile_jitted(fn, *args)
    run_s, run_cpu_s = time_interleaved(
        {"run": lambda: jax.block_until_ready(compiled(*args))}, repeat, min_sample_s)["run"]
    return Timing(compiling.wall_s, run_s, repeat, compiling.cpu_s, run_cpu_s)


def time_calls(fn, *args, repeat: int = 7, min_sample_s: float = 0.02) -> Timing:
    """Median wall and CPU time per call of a plain Python/NumPy function.

    Nothing is compiled: ``compile_s`` and ``compile_cpu_s`` are NaN.
    """
    run_s, run_cpu_s = time_interleaved({"run": lambda: fn(*args)}, repeat, min_sample_s)["run"]
    return Timing(math.nan, run_s, repeat, math.nan, run_cpu_s)


def time_python(fn, *args, repeat: int = 7, min_sample_s: float = 0.02) -> float:
    """Median wall seconds per call of a plain Python/NumPy function (``time_calls(...).run_s``)."""
    return time_calls(fn, *args, repeat=repeat, min_sample_s=min_sample_s).run_s


def compiled_temp_bytes(fn, *args) -> int:
    """Bytes of scratch memory XLA reserves for ``jax.jit(fn)(*args)``."""
    return jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes
