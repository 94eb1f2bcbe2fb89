"""Time several calls in turn, so that a change in the machine's load falls on all of them.

``lecture_utils.timing.time_jitted`` and ``time_calls`` take all the samples of
one function before the next function's. On a shared machine a burst of other
work then lands on one implementation and makes a ratio of two of them wrong.
Here every round takes one sample of each call, in a fixed order, and each
median is over the rounds. The clocks are the package's
(:class:`lecture_utils.timing.Stopwatch`: wall and process CPU time), and a
compilation is measured as ``time_jitted`` measures it.
"""

import statistics

import jax

from lecture_utils.compile_cache import persistent_cache_bypassed
from lecture_utils.timing import Stopwatch


def compile_jitted(fn, *args):
    """``jax.jit(fn)`` compiled for ``args`` as in a fresh process, and the Stopwatch of it.

    As ``lecture_utils.timing.time_jitted``: JAX's in-memory caches are
    cleared first and the persistent compilation cache is neither read nor
    written. Returns ``(compiled, watch)``; ``compiled(*args)`` runs the program.
    """
    jax.clear_caches()
    with persistent_cache_bypassed(), Stopwatch() as watch:
        compiled = jax.jit(fn).lower(*args).compile()
    return compiled, watch


def time_interleaved(calls: dict, repeat: int, min_sample_s: float = 0.02) -> dict:
    """Median wall and CPU seconds per call of each of ``calls``, sampled in turn.

    Args:
        calls: name -> function of no arguments; a jitted call should block
            until its result is ready (``jax.block_until_ready``).
        repeat: rounds; each takes one sample of every call.
        min_sample_s: each sample loops a call enough times to last about this
            long (the count fixed, per call, by one timed call after a warm-up).

    Returns:
        name -> ``(wall_s, cpu_s)``, medians over the rounds.
    """
    if repeat < 1:
        raise ValueError(f"repeat must be at least 1, got {repeat}")
    number = {}
    for name, call in calls.items():
        call()  # warm-up
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
