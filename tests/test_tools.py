"""gradcheck, optim, timing and the compilation cache: the checks must pass on right answers and fail on wrong ones."""

import json
import os
import subprocess
import sys
import textwrap
import time
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from lecture_utils.gradcheck import assert_trees_allclose, central_difference, check_jvp, check_vjp
from lecture_utils.optim import lbfgs_minimize
from lecture_utils.timing import (
    Stopwatch,
    compiled_temp_bytes,
    time_calls,
    time_jitted,
    time_python,
)


@jax.custom_jvp
def wrong_forward(x):
    return jnp.sin(x)


@wrong_forward.defjvp
def _wrong_forward_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    return jnp.sin(x), 1.01 * jnp.cos(x) * dx


def test_central_difference_on_pytrees():
    f = lambda p: {"out": p["a"] ** 2 * p["b"]}
    d = central_difference(f, ({"a": 2.0, "b": 3.0},), ({"a": 1.0, "b": 0.0},))
    np.testing.assert_allclose(d["out"], 12.0, rtol=1e-9)


def test_check_jvp_passes_and_fails():
    x = jnp.linspace(0.1, 1.0, 5)
    check_jvp(jnp.sin, (x,), (jnp.ones(5),))
    with pytest.raises(AssertionError):
        check_jvp(wrong_forward, (x,), (jnp.ones(5),))


def test_check_vjp_passes_and_fails():
    x = jnp.linspace(0.1, 1.0, 5)
    check_vjp(lambda x: jnp.sin(x) * x, (x,), key=jax.random.key(0))
    # Forward and reverse agree with each other here (reverse mode is the
    # transpose of the wrong rule), so it is the finite difference that catches it.
    with pytest.raises(AssertionError, match="reverse mode vs central difference"):
        check_vjp(wrong_forward, (x,), key=jax.random.key(0))


def test_assert_trees_allclose_reports_structure_and_values():
    assert_trees_allclose({"a": 1.0}, {"a": 1.0 + 1e-12})
    with pytest.raises(AssertionError, match="structures differ"):
        assert_trees_allclose({"a": 1.0}, {"b": 1.0})
    with pytest.raises(AssertionError):
        assert_trees_allclose({"a": 1.0}, {"a": 1.1})


def test_lbfgs_matches_scipy_on_rosenbrock():
    def rosen(p):
        return jnp.sum(100.0 * (p["x"][1:] - p["x"][:-1] ** 2) ** 2 + (1 - p["x"][:-1]) ** 2)

    x0 = jnp.array([-1.2, 1.0, 0.5, -0.3])
    result = lbfgs_minimize(rosen, {"x": x0}, max_iter=1000, tol=1e-9)
    reference = scipy.optimize.minimize(scipy.optimize.rosen, np.asarray(x0),
                                        jac=scipy.optimize.rosen_der, method="BFGS", tol=1e-12)
    np.testing.assert_allclose(result.params["x"], reference.x, atol=1e-6)
    assert result.grad_norm < 1e-9 and 0 < result.iterations < 1000
    assert result.status == "converged" and result.converged


def rosen(p):
    return jnp.sum(100.0 * (p[1:] - p[:-1] ** 2) ** 2 + (1 - p[:-1]) ** 2)


def test_lbfgs_stops_at_max_iter_and_says_so():
    x0 = jnp.array([-1.2, 1.0, 0.5, -0.3])
    result = lbfgs_minimize(rosen, x0, max_iter=3, tol=1e-9)
    assert result.status == "max_iter" and not result.converged
    assert result.iterations == 3 and result.grad_norm > 1e-9
    assert result.value < rosen(x0)  # three real steps were taken
    # Given the iterations, the same problem converges: the limit was the reason.
    full = lbfgs_minimize(rosen, x0, max_iter=1000, tol=1e-9)
    assert full.status == "converged" and full.iterations > 3
    np.testing.assert_allclose(full.params, np.ones(4), atol=1e-8)


def test_lbfgs_tol_zero_is_reached_at_an_exact_minimum():
    # The gradient 2 (x - 3) is exactly 0 at x = 3, which L-BFGS reaches exactly.
    result = lbfgs_minimize(lambda x: jnp.sum((x - 3.0) ** 2), jnp.zeros(2), tol=0.0, max_iter=50)
    assert result.status == "converged" and result.grad_norm == 0.0 and result.iterations < 50
    with pytest.raises(ValueError, match="must be >= 0"):
        lbfgs_minimize(rosen, jnp.zeros(2), tol=-1.0)


def test_lbfgs_rejects_a_nan_gradient_at_the_start():
    # sqrt(x) behind a where: the value is finite at x = -1, its gradient is NaN.
    f = lambda x: jnp.sum(jnp.where(x > 0, jnp.sqrt(x), 0.0) + x ** 2)
    x0 = jnp.array([-1.0, 2.0])
    value, grad = jax.value_and_grad(f)(x0)
    assert np.isfinite(value) and np.isnan(grad).sum() == 1
    with pytest.raises(ValueError, match=r"gradient of fun is not finite at init_params \(1 of 2"):
        lbfgs_minimize(f, x0)


def test_lbfgs_below_rounding_stalls_at_the_minimiser():
    # f = x'Qx / 2 - c'x: minimiser Q^-1 c, which float64 cannot hit exactly, so the
    # gradient stops near 1e-16 and a tol of 1e-20 is out of reach.
    rng = np.random.default_rng(0)
    R = rng.normal(size=(5, 5))
    Q, c = R @ R.T + np.eye(5), rng.normal(size=5)
    result = lbfgs_minimize(lambda x: 0.5 * x @ Q @ x - c @ x, jnp.zeros(5), tol=1e-20,
                            max_iter=300)
    assert result.status == "stalled" and not result.converged
    assert 1e-20 < result.grad_norm < 1e-14 and result.iterations < 300
    np.testing.assert_allclose(result.params, np.linalg.solve(Q, c), rtol=1e-13)
    reference = scipy.optimize.minimize(lambda x: 0.5 * x @ Q @ x - c @ x, np.zeros(5),
                                        jac=lambda x: Q @ x - c, method="L-BFGS-B",
                                        options={"gtol": 1e-12, "ftol": 0.0})
    np.testing.assert_allclose(result.params, reference.x, atol=1e-8)


def test_lbfgs_line_search_fails_where_the_gradient_stops_being_finite():
    # For x > 1.5 the value is finite but the gradient NaN (a where over a NaN
    # branch); below it the slope is about -3 up to the edge. No point past 1.5 is
    # accepted, and none short of it meets the curvature condition near the edge.
    f = lambda x: jnp.sum((x - 3.0) ** 2 + jnp.where(x <= 1.5, (1.5 - x) ** 1.5, 0.0))
    assert np.isnan(jax.grad(f)(jnp.array([2.0]))).all()
    result = lbfgs_minimize(f, jnp.array([0.0]))
    assert result.status == "line_search_failed" and not result.converged
    x = float(result.params[0])
    assert 1.4 < x <= 1.5 and result.value < f(jnp.array([0.0]))
    np.testing.assert_allclose(result.grad_norm, abs(2 * (x - 3) - 1.5 * np.sqrt(1.5 - x)),
                               rtol=1e-12)


def test_lbfgs_finds_the_minimiser_of_a_quadratic_over_a_pytree():
    # f = 1/2 (x - b)' Q (x - b) + 7 over x = (a (2,), m (2, 2)): minimiser b, minimum 7.
    rng = np.random.default_rng(3)
    R = rng.normal(size=(6, 6))
    Q, b = R @ R.T + 0.5 * np.eye(6), rng.normal(size=6)

    def f(p):
        x = jnp.concatenate([p["a"], p["m"].ravel()])
        return 0.5 * (x - b) @ Q @ (x - b) + 7.0

    result = lbfgs_minimize(f, {"a": jnp.zeros(2), "m": jnp.zeros((2, 2))}, tol=1e-10)
    np.testing.assert_allclose(result.params["a"], b[:2], atol=1e-9)
    np.testing.assert_allclose(result.params["m"], b[2:].reshape(2, 2), atol=1e-9)
    np.testing.assert_allclose(result.value, 7.0, rtol=1e-14)
    assert result.params["m"].shape == (2, 2) and result.grad_norm < 1e-10
    reference = scipy.optimize.minimize(lambda x: 0.5 * (x - b) @ Q @ (x - b) + 7.0, np.zeros(6),
                                        jac=lambda x: Q @ (x - b), method="BFGS", tol=1e-12)
    np.testing.assert_allclose(result.params["a"], reference.x[:2], atol=1e-7)


def test_lbfgs_backs_off_from_infeasible_points():
    # -log(x) - log(1 - x) is +inf (here: nan -> inf) outside (0, 1); minimum at 1/2.
    f = lambda x: jnp.where((x > 0) & (x < 1), -jnp.log(x) - jnp.log1p(-x), jnp.inf).sum()
    result = lbfgs_minimize(f, jnp.array([0.9, 0.05]))
    np.testing.assert_allclose(result.params, [0.5, 0.5], atol=1e-9)
    assert result.status == "converged"
    with pytest.raises(ValueError, match="not finite at init_params"):
        lbfgs_minimize(f, jnp.array([2.0]))


class CompileEvents:
    """Counts JAX's compilation monitoring events while active."""

    def __init__(self):
        self.counts = Counter()
        jax.monitoring.register_event_listener(self._event)
        jax.monitoring.register_event_duration_secs_listener(self._duration)

    def _event(self, name, **kwargs):
        self.counts[name] += 1

    def _duration(self, name, duration, **kwargs):
        self.counts[name] += 1

    def close(self):
        jax.monitoring.unregister_event_listener(self._event)
        jax.monitoring.unregister_event_duration_listener(self._duration)

    def backend_compiles(self):
        return self.counts["/jax/core/compile/backend_compile_duration"]


def test_lbfgs_does_not_recompile_the_same_objective():
    traces = []

    def f(p):
        traces.append(p.shape)  # runs only while JAX traces f
        return jnp.sum((p - jnp.arange(p.shape[0])) ** 2)

    first = lbfgs_minimize(f, jnp.zeros(3))
    events = CompileEvents()
    try:
        again = lbfgs_minimize(f, jnp.ones(3))
        assert traces == [(3,)] and events.backend_compiles() == 0
        # The counters do see a new shape: the check above can fail.
        lbfgs_minimize(f, jnp.zeros(4))
        assert traces == [(3,), (4,)] and events.backend_compiles() >= 1
    finally:
        events.close()
    np.testing.assert_allclose(first.params, again.params, atol=1e-9)


# Timing: functions whose wall and CPU time are known. A sleep takes wall time
# and next to no CPU time; a spin on this thread's CPU clock (a different clock
# from the process-wide one the timer reads) takes at least its CPU time, and as
# much wall time or more.
CALL_S = 0.02  # one call
TRACE_S = 0.1  # added to a compile, at trace time


def sleep(x, seconds=CALL_S):
    time.sleep(seconds)
    return x


def spin(x, seconds=CALL_S):
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass
    return x


def test_time_calls_tells_cpu_time_from_wall_time():
    slept = time_calls(sleep, 1.0, repeat=3, min_sample_s=0)
    assert slept.samples == 3 and np.isnan(slept.compile_s) and np.isnan(slept.compile_cpu_s)
    assert CALL_S <= slept.run_s < 2.5 * CALL_S and slept.run_cpu_s < 0.1 * CALL_S
    spun = time_calls(spin, 1.0, repeat=3, min_sample_s=0)
    assert CALL_S <= spun.run_cpu_s < 1.5 * CALL_S and spun.run_s >= CALL_S
    # Calls of 2 ms looped to samples of 20 ms: the times are per call.
    short = time_calls(spin, 1.0, 0.002, repeat=3, min_sample_s=0.02)
    assert 0.002 <= short.run_cpu_s < 0.003
    # time_python is the wall time alone.
    assert CALL_S <= time_python(sleep, 1.0, repeat=3, min_sample_s=0) < 2.5 * CALL_S
    with Stopwatch() as watch:
        spin(None, CALL_S)
        sleep(None, CALL_S)
    assert 2 * CALL_S <= watch.wall_s and CALL_S <= watch.cpu_s < 1.5 * CALL_S


def on_host(f):
    """A jitted function's body calling ``f`` on the host, once per call."""
    def body(x):
        shape = jax.ShapeDtypeStruct(x.shape, x.dtype)
        return 2.0 * jax.pure_callback(lambda x: np.asarray(f(np.asarray(x))), shape, x)
    return body


def test_time_jitted_times_runs_on_both_clocks():
    x = jnp.ones(3)
    slept = time_jitted(on_host(sleep), x, repeat=3, min_sample_s=0)
    assert slept.samples == 3
    assert CALL_S <= slept.run_s < 2.5 * CALL_S and slept.run_cpu_s < 0.25 * CALL_S
    spun = time_jitted(on_host(spin), x, repeat=3, min_sample_s=0)
    assert CALL_S <= spun.run_cpu_s < 1.5 * CALL_S and spun.run_s >= CALL_S


def test_time_jitted_counts_tracing_in_the_compile():
    # Python in the body runs while JAX traces, inside the compile's timer.
    def traced_with(f):
        def fn(x):
            f(None, TRACE_S)
            return jnp.sin(x) * 2.0
        return fn

    x = jnp.ones(3)
    spun = time_jitted(traced_with(spin), x, repeat=3, min_sample_s=1e-3)
    assert spun.compile_cpu_s >= TRACE_S and spun.compile_s >= TRACE_S
    slept = time_jitted(traced_with(sleep), x, repeat=3, min_sample_s=1e-3)
    assert slept.compile_s >= TRACE_S and slept.compile_cpu_s < slept.compile_s - TRACE_S / 2
    assert slept.run_s < 0.01 * TRACE_S  # the sleep is not in the compiled program


def test_compiled_temp_bytes_counts_real_scratch():
    x = jnp.ones((50, 50))
    # Scratch: none for an elementwise map; (x @ x) @ x must hold x @ x, one 50x50
    # float64 matrix; two independent products hold two.
    assert compiled_temp_bytes(lambda x: 2.0 * x, x) == 0
    assert compiled_temp_bytes(lambda x: (x @ x) @ x, x) == 50 * 50 * 8
    assert compiled_temp_bytes(lambda x: (x @ x) @ (x @ x.T), x) >= 2 * 50 * 50 * 8


def run_python(code, env_extra, tmp_path):
    """Run ``code`` in a fresh interpreter; return the JSON it prints last."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JAX_COMPILATION_CACHE", "LECTURE_UTILS_", "JAX_ENABLE_COMPILATION"))}
    env.update(XDG_CACHE_HOME=str(tmp_path / "xdg"), HOME=str(tmp_path / "home"), **env_extra)
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


CACHE_PROBE = """
    import json
    from collections import Counter
    import jax
    counts = Counter()
    jax.monitoring.register_event_listener(lambda name, **kw: counts.update([name]))
    import lecture_utils
    from lecture_utils.compile_cache import cache_dir
    import jax.numpy as jnp
    f = jax.jit(lambda x: jnp.cumsum(jnp.sin(x) ** 2))
    f(jnp.linspace(0.0, 1.0, 11)).block_until_ready()
    print(json.dumps({"dir": cache_dir(), "hits": counts["/jax/compilation_cache/cache_hits"]}))
"""


def files_in(path):
    return sorted(p.name for p in path.iterdir()) if path.exists() else []


def test_compilation_cache_default_dir_and_reuse_across_processes(tmp_path):
    default = tmp_path / "xdg" / "lecture_utils" / "jax"
    first = run_python(CACHE_PROBE, {}, tmp_path)
    assert first["dir"] == str(default) and first["hits"] == 0
    written = files_in(default)
    assert any(name.startswith("jit_") for name in written)
    second = run_python(CACHE_PROBE, {}, tmp_path)
    assert second["hits"] >= 1 and files_in(default) == written  # read, nothing new


def test_compilation_cache_respects_the_environment(tmp_path):
    mine = tmp_path / "mine"
    chosen = run_python(CACHE_PROBE, {"JAX_COMPILATION_CACHE_DIR": str(mine)}, tmp_path)
    assert chosen["dir"] == str(mine) and files_in(mine)
    off = run_python(CACHE_PROBE, {"LECTURE_UTILS_NO_CACHE": "1"}, tmp_path)
    assert off["dir"] is None and not files_in(tmp_path / "xdg" / "lecture_utils" / "jax")
    empty = run_python(CACHE_PROBE, {"JAX_COMPILATION_CACHE_DIR": ""}, tmp_path)
    assert empty["dir"] is None and not files_in(tmp_path / "xdg" / "lecture_utils" / "jax")


def test_time_jitted_compiles_for_real_despite_the_persistent_cache(tmp_path):
    code = """
        import json
        from collections import Counter
        import jax
        counts = Counter()
        jax.monitoring.register_event_listener(lambda name, **kw: counts.update([name]))
        seconds = Counter()
        def on_duration(name, secs, **kw):
            counts.update([name])
            seconds[name] += secs
        jax.monitoring.register_event_duration_secs_listener(on_duration)
        import lecture_utils
        import jax.numpy as jnp
        from lecture_utils.timing import time_jitted

        def f(x):
            return jax.lax.scan(lambda c, a: (jnp.sin(c) * a + c, c), 0.0, x)[1].sum()

        x = jnp.linspace(0.0, 1.0, 7)
        jax.jit(f).lower(x).compile()  # compiled, and written to the cache
        jax.clear_caches()
        jax.jit(f).lower(x).compile()  # read back from the cache
        hits_before = counts["/jax/compilation_cache/cache_hits"]
        compiles_before = counts["/jax/core/compile/backend_compile_duration"]
        seconds.clear()
        t = time_jitted(f, x, repeat=3, min_sample_s=1e-3)
        print(json.dumps({
            "hits_before": hits_before,
            "hits_in_timing": counts["/jax/compilation_cache/cache_hits"] - hits_before,
            "compiles_in_timing": counts["/jax/core/compile/backend_compile_duration"]
                                  - compiles_before,
            "compile_s": t.compile_s,
            "backend_compile_s": seconds["/jax/core/compile/backend_compile_duration"]}))
    """
    out = run_python(code, {"JAX_COMPILATION_CACHE_DIR": str(tmp_path / "cache")}, tmp_path)
    assert out["hits_before"] == 1  # the cache is on and holds f ...
    assert out["hits_in_timing"] == 0 and out["compiles_in_timing"] == 1  # ... yet XLA compiled
    assert out["compile_s"] >= out["backend_compile_s"]  # XLA's compile is in the timed span


def test_time_interleaved_samples_each_call_every_round():
    """Two calls of known, different lengths: each median is its own, whatever the order."""
    import time as _time

    from lecture_utils.timing import time_interleaved

    order = []

    def short():
        order.append("short")
        _time.sleep(0.002)

    def long():
        order.append("long")
        _time.sleep(0.006)

    got = time_interleaved({"short": short, "long": long}, repeat=3, min_sample_s=0)
    assert 0.002 <= got["short"][0] < 0.004 + 0.002 and 0.006 <= got["long"][0] < 0.012
    assert got["short"][1] < 0.001 and got["long"][1] < 0.001  # a sleep uses no CPU time
    # Warm-ups first, then one sample of each per round, in turn.
    assert order[2:] == ["short", "long"] * 3
