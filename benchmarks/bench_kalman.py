"""Kalman log-likelihood and its gradient: ours beside numba, dynamax, statsmodels, NumPy, filterpy.

Usage (after `pip install -r benchmarks/requirements.txt`):
    python benchmarks/bench_kalman.py [--quick]

The same data for every implementation, float64, CPU. Every implementation's
log-likelihood must agree with ours (exact filter, jitter=0) to 1e-8 relative
before its time is reported (statsmodels' default filter, which freezes its
gain, to STATSMODELS_DEFAULT_RTOL); so must every gradient: kalman_loglik's
hand-derived one agrees with autodiff through the filter to 1e-8, and
dynamax's, carried back through its parametrisation, with ours to 1e-6 (see
check_gradient). Times are wall and CPU time, taken by lecture_utils.timing:
compile time apart from run time, run time the median of repeated calls after
a warm-up.

First, the settings groups (settings_groups): N = 5, M = 2, ours, a plain
numba loop (the practical floor, with and without a steady-state switch),
statsmodels (exact and default), dynamax, and the value and gradient of ours
and dynamax, run once in a child process with XLA's default settings and once
in a child with the settings ``import lecture_utils`` applies; within a child
the implementations are timed in turn (lecture_utils.timing.time_interleaved). The targets of issue
21 are judged there. Then every implementation, one after another, in this
process. Writes benchmarks/results/kalman.{md,csv} and kalman_scaling.png.

This process gives JAX one CPU device per core (XLA_FLAGS, unless already
set), so that the sharded batch can use them all; every other row runs on
device 0. The settings groups' children do not.
"""

import argparse
import csv
import datetime
import inspect
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

if "--settings-child" not in sys.argv:  # a settings group's child runs with its own settings
    os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={os.cpu_count()}")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import peers  # noqa: E402

from lecture_utils.kalman import kalman_filter, kalman_filter_numpy, kalman_loglik  # noqa: E402
from lecture_utils.kalman import kalman_loglik_batch, kalman_loglik_sharded  # noqa: E402
from lecture_utils.simulation import LSSModel, simulate_lss  # noqa: E402
from lecture_utils.xla_settings import LOOP_OPTION, OPT_OUT_ENV  # noqa: E402
from lecture_utils.timing import (Stopwatch, Timing, compile_jitted, time_calls,  # noqa: E402
                                  time_interleaved, time_jitted)

RESULTS = Path(__file__).parent / "results"
RTOL = 1e-8
GRAD_RTOL = {"autodiff": 1e-8, "dynamax": 1e-6}
NAN = float("nan")
STALLED = Timing(compile_s=NAN, run_s=NAN, samples=0, compile_cpu_s=NAN, run_cpu_s=NAN)


def make_row(case, impl, N, T, batch, t, settings="main"):
    """One row of the results; ``settings`` is "main" (this process) or a settings group."""
    return {"case": case, "implementation": impl, "N": N, "T": T, "batch": batch,
            "compile_ms": t.compile_s * 1e3, "run_us": t.run_s * 1e6,
            "ns_per_step": t.run_s / (T * batch) * 1e9,
            "compile_cpu_ms": t.compile_cpu_s * 1e3, "run_cpu_us": t.run_cpu_s * 1e6,
            "settings": settings}


def random_problem(seed, N, T, M=2):
    """A stable model (spectral radius 0.9) and data simulated from it."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(N, N))
    A *= 0.9 / np.max(np.abs(np.linalg.eigvals(A)))
    model = LSSModel(A, 0.3 * rng.normal(size=(N, N)), rng.normal(size=(M, N)),
                     0.3 * np.eye(M) + 0.05 * rng.normal(size=(M, M)))
    model = LSSModel(*map(jnp.asarray, model))
    mu0, Sigma0 = jnp.zeros(N), jnp.eye(N)
    _, y = simulate_lss(model, rng.normal(size=N), rng.normal(size=(T, N)),
                        rng.normal(size=(T + 1, M)))
    return model, mu0, Sigma0, y[1:]


def source_problem(N, T):
    """The source lecture's models: N=2, T=20 (coupled states) and N=5, T=100."""
    if N == 2:
        model = LSSModel(jnp.array([[0.9, 0.1], [-0.1, 0.8]]), 0.1 * jnp.eye(2),
                         jnp.eye(2), 0.05 * jnp.eye(2))
    else:
        keys = jax.random.split(jax.random.key(42), 4)
        A = jax.random.normal(keys[0], (5, 5))
        model = LSSModel(0.5 * A / jnp.max(jnp.abs(jnp.linalg.eigvals(A))),
                         0.1 * jax.random.normal(keys[1], (5, 5)),
                         jax.random.normal(keys[2], (2, 5)),
                         0.1 * jax.random.normal(keys[3], (2, 2)))
    _, y = simulate_lss(model, jnp.zeros(N), jax.random.normal(jax.random.key(1), (T, N)),
                        jax.random.normal(jax.random.key(2), (T + 1, 2)))
    return model, jnp.zeros(N), jnp.eye(N), y[1:]


# The main section compares full recursions, as every peer there runs one (statsmodels
# with tolerance=0, dynamax, NumPy, filterpy), and as the adjoint mirrors: the
# steady-state switch is timed in the settings section, next to statsmodels' own.
def ours(model, mu0, Sigma0, y, jitter=0.0, method="sequential"):
    return kalman_filter(model, mu0, Sigma0, y, jitter=jitter, method=method,
                         steady_state=False).loglik


def loglik(model, mu0, Sigma0, y, jitter=0.0):
    """kalman_loglik: the value keeps no path; the gradient is the hand-derived adjoint."""
    return kalman_loglik(model, mu0, Sigma0, y, jitter=jitter, steady_state=False)


# The score: value and gradient w.r.t. (model, mu0), the data passed as arguments
# (not closed over, which would make them constants of the compiled program).
score = jax.value_and_grad(loglik, argnums=(0, 1))
autodiff_score = jax.value_and_grad(ours, argnums=(0, 1))


def scaled_models(model, n):
    """n copies of ``model`` with A scaled by 0.5 ... 1.0: a batch of parameter sets."""
    scale = jnp.linspace(0.5, 1.0, n)
    return LSSModel(scale[:, None, None] * model.A,
                    *(jnp.broadcast_to(m, (n,) + m.shape) for m in model[1:]))


def batch_rows(add, model, mu0, Sigma0, y, n, repeat, ref=None):
    """vmap of the single filter, the batch-last filter, and the sharded one, for n models."""
    models = scaled_models(model, n)
    vmapped = jax.vmap(lambda m: ours(m, mu0, Sigma0, y))
    contenders = [
        ("ours: vmap of kalman_filter", vmapped),
        ("ours: kalman_loglik_batch", lambda m: kalman_loglik_batch(m, mu0, Sigma0, y, jitter=0.0)),
        (f"ours: sharded over {jax.device_count()} devices",
         lambda m: kalman_loglik_sharded(m, mu0, Sigma0, y, jitter=0.0)),
    ]
    want = vmapped(models)
    for impl, fn in contenders:
        got = fn(models)
        if ref is not None:
            check(impl, got[-1], ref)  # the last model is the unscaled one
        np.testing.assert_allclose(got, want, rtol=RTOL)
        t = time_jitted(fn, models, repeat=repeat)
        add(f"{impl} ({n} models)", t, batch=n)


def parallel_child(T):
    """Run in a child process: time method='parallel' at T and print JSON."""
    model, mu0, Sigma0, y = random_problem(0, 5, T)
    t = time_jitted(lambda *a: ours(*a, method="parallel"), model, mu0, Sigma0, y, repeat=3)
    print(json.dumps({"loglik": float(ours(model, mu0, Sigma0, y, method="parallel")),
                      **t._asdict()}))


PARALLEL_TIMEOUT_S = 240


def parallel_rows(add, T, ref):
    """The associative-scan filter, timed in a child process with a timeout.

    With LAPACK solves inside, XLA:CPU's runtime (jaxlib 0.10.2) sometimes
    stopped for good on this filter at T >= 4,000 (see lecture_utils.kalman.parallel); the
    package now avoids them for small N, and the child process and its timeout
    keep any stall from hanging the benchmark.
    """
    try:
        out = subprocess.run([sys.executable, __file__, "--parallel-child", str(T)],
                             capture_output=True, text=True, timeout=PARALLEL_TIMEOUT_S,
                             check=True)
    except subprocess.TimeoutExpired:
        print(f"parallel T={T}: no result within {PARALLEL_TIMEOUT_S} s (runtime stall)")
        add("ours: method='parallel' (STALLED)", STALLED)
        return
    result = json.loads(out.stdout.strip().splitlines()[-1])
    check("ours: method='parallel'", result["loglik"], ref)
    add("ours: method='parallel' (jit)", Timing(**{k: result[k] for k in Timing._fields}))


DYNAMAX_RTOL = 1e-6  # dynamax as timed (with its 1e-9 boost of S_t) against our exact filter
STATSMODELS = "statsmodels (Cython, tolerance=0)"
STATSMODELS_DEFAULT = "statsmodels (Cython, default tolerance=1e-19)"
STATSMODELS_DEFAULT_TOL = 1e-19
# statsmodels' default filter freezes its gain once the squared change of the predicted
# covariance is below 1e-19 (a change of about 3e-10): its log-likelihood moves by up
# to 2.9e-9 relative here (the source N = 2 model); the others agree to 1e-11 or better.
STATSMODELS_DEFAULT_RTOL = 5e-9
NUMBA = {"numba loop, full recursion": False, "numba loop, steady-state switch": True}
DISAGREEMENT = {}  # implementation -> largest relative difference from ours seen in this process


def check(name, value, reference, rtol=RTOL):
    """``value`` agrees with ours to ``rtol`` relative; the largest difference is kept per name."""
    rel = abs(value - reference) / abs(reference)
    DISAGREEMENT[name] = max(DISAGREEMENT.get(name, 0.0), float(rel))
    if not np.isclose(value, reference, rtol=rtol, atol=0):
        raise AssertionError(f"{name}: loglik {value!r} disagrees with ours {reference!r} "
                             f"(relative {rel:.2g} > {rtol:g})")


def numba_call(model, mu0, Sigma0, y, steady_state):
    """peers.numba_loglik, and the wall and CPU seconds of its first call if that compiled.

    numba compiles once per (N, M) and process: where this size was compiled
    before, the compile times are NaN.
    """
    fn = peers.numba_loglik(model, mu0, Sigma0, y, steady_state=steady_state)
    compiled_before = bool(fn.func.signatures)
    with Stopwatch() as first_call:
        fn()
    if compiled_before:
        return fn, NAN, NAN
    return fn, first_call.wall_s, first_call.cpu_s


def check_gradient(name, got, want, rtol):
    """Each array of the gradient pytree ``got`` agrees with ``want``'s: max |error| <= rtol max |want|."""
    for (path, w), g in zip(jax.tree_util.tree_leaves_with_path(want), jax.tree.leaves(got)):
        err, scale = np.max(np.abs(np.asarray(g) - np.asarray(w))), np.max(np.abs(np.asarray(w)))
        if not err <= rtol * scale:
            raise AssertionError(f"{name}: gradient {jax.tree_util.keystr(path)} off by "
                                 f"{err:.3g} (scale {scale:.3g}, rtol {rtol:g})")


def check_dynamax(model, mu0, Sigma0, y, ref, fn=None):
    """dynamax's exact filter (no boost) agrees with ours; the one timed, to DYNAMAX_RTOL.

    With ``fn`` (a jitted ``(params, y) -> loglik``), only the value is checked.
    Otherwise the value and the gradient w.r.t. dynamax's parameters, carried
    back to ``(model, mu0)`` by the chain rule through ``peers.dynamax_params``,
    and its G block directly, are compared with ours; returns nothing.
    """
    params, pullback = jax.vjp(lambda m, mu: peers.dynamax_params(m, mu, Sigma0), model, mu0)
    if fn is not None:
        with peers.dynamax_without_boost():
            check("dynamax (no boost)", peers.dynamax_marginal_loglik(params, y), ref)
        if not np.isclose(fn(params, y), ref, rtol=DYNAMAX_RTOL, atol=0):
            raise AssertionError(f"dynamax: loglik {fn(params, y)!r} far from ours {ref!r}")
        return
    with peers.dynamax_without_boost():
        value, params_bar = jax.value_and_grad(peers.dynamax_marginal_loglik)(params, y)
    check("dynamax value_and_grad (no boost)", value, ref)
    _, grad = jax.jit(score)(model, mu0, Sigma0, y)
    check_gradient("dynamax vs ours", pullback(params_bar), grad, GRAD_RTOL["dynamax"])
    check_gradient("dynamax vs ours, d/dG directly", params_bar.emissions.weights, grad[0].G,
                   GRAD_RTOL["dynamax"])


def check_score(model, mu0, Sigma0, y, ref, value_fn=None):
    """kalman_loglik's value against ``ref``, its gradient against autodiff and dynamax's.

    ``value_fn`` (default ``loglik``) is the variant of kalman_loglik whose
    ``jax.value_and_grad`` is checked: against autodiff through kalman_filter
    (1e-8) and, through check_dynamax, dynamax's against ours (1e-6).
    """
    args = (model, mu0, Sigma0, y)
    value_fn = value_fn or loglik
    check("ours: kalman_loglik", value_fn(*args), ref)
    value, grad = jax.jit(jax.value_and_grad(value_fn, argnums=(0, 1)))(*args)
    check("ours: value_and_grad of kalman_loglik", value, ref)
    value_ad, grad_ad = jax.jit(autodiff_score)(*args)
    check("autodiff: value_and_grad of kalman_filter", value_ad, ref)
    check_gradient("ours vs autodiff", grad, grad_ad, GRAD_RTOL["autodiff"])
    check_dynamax(*args, ref)


def score_rows(add, model, mu0, Sigma0, y, repeat, ref):
    """The log-likelihood alone and with its gradient: ours, autodiff through the filter, dynamax.

    Checked before any timing (check_score).
    """
    args = (model, mu0, Sigma0, y)
    check_score(*args, ref)

    t = time_jitted(loglik, *args, repeat=repeat)
    add("ours: kalman_loglik (jit)", t)
    t = time_jitted(score, *args, repeat=repeat)
    add("ours: value_and_grad kalman_loglik (jit)", t)
    t = time_jitted(autodiff_score, *args, repeat=repeat)
    add("autodiff: value_and_grad kalman_filter (jit)", t)
    params, fn = peers.dynamax_value_and_grad(model, mu0, Sigma0)
    t = time_jitted(fn, params, y, repeat=repeat)
    add("dynamax: value_and_grad lgssm_filter (jit)", t)


# ----- settings groups: each implementation under default and under tuned XLA settings -------

GROUPS = ("default", "tuned")
SETTINGS_LENGTHS = {True: (100, 10_000), False: (100, 1_000, 10_000, 100_000)}  # by --quick
SETTINGS_TIMEOUT_S = 1800
HAS_STEADY_STATE = "steady_state" in inspect.signature(kalman_loglik).parameters
OURS_DEFAULTS = (f" (steady_state="
                 f"{inspect.signature(kalman_loglik).parameters['steady_state'].default})"
                 if HAS_STEADY_STATE else "")
OURS_FULL = "ours: kalman_loglik, full recursion (jit)"
OURS_STEADY = "ours: kalman_loglik, steady-state switch (jit)"
OURS_SCORE = "ours: value_and_grad kalman_loglik, full recursion (jit)"
DYNAMAX = "dynamax lgssm_filter (jit)"
DYNAMAX_SCORE = "dynamax: value_and_grad lgssm_filter (jit)"


def full_recursion(model, mu0, Sigma0, y):
    """kalman_loglik (exact: jitter=0) with the full recursion at every step."""
    if HAS_STEADY_STATE:
        return kalman_loglik(model, mu0, Sigma0, y, jitter=0.0, steady_state=False)
    return kalman_loglik(model, mu0, Sigma0, y, jitter=0.0)


def steady_state_loglik(model, mu0, Sigma0, y):
    """kalman_loglik (jitter=0) with its steady-state switch (only where it has one)."""
    return kalman_loglik(model, mu0, Sigma0, y, jitter=0.0, steady_state=True)


def settings_env(group):
    """A group's child's environment: none of the settings of this one; "default" opts out."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("XLA_FLAGS", OPT_OUT_ENV, "JAX_CPU_ENABLE_ASYNC_DISPATCH")}
    if group == "default":
        env[OPT_OUT_ENV] = "1"
    return env


def current_settings():
    """The settings of this process that the groups differ in."""
    return {"XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
            "async_dispatch": bool(jax.config.read("jax_cpu_enable_async_dispatch"))}


def apply_settings(group):
    """In a group's child: check that ``import lecture_utils`` left the group's settings.

    The package (imported with this script) applies the tuned settings unless
    LECTURE_UTILS_NO_XLA_TUNING=1, which the default group's child is given
    (lecture_utils.xla_settings is their one home). Raises if a group's
    settings are not what its name says; returns them.
    """
    settings = current_settings()
    tuned = LOOP_OPTION in settings["XLA_FLAGS"] and not settings["async_dispatch"]
    untuned = LOOP_OPTION not in settings["XLA_FLAGS"] and settings["async_dispatch"]
    if not (tuned if group == "tuned" else untuned):
        raise RuntimeError(f"the {group} group's child runs with {settings}")
    return settings


def settings_rows(group, problem, repeat):
    """One group's implementations at one T: each checked, compiled, then all timed in turn.

    Ours (full recursion; the steady-state switch where kalman_loglik has
    one), the numba loop with and without its switch, statsmodels at
    tolerance 0 and at its default, dynamax; the value and gradient of ours
    and of dynamax. The rounds of timing interleave them (lecture_utils.timing.time_interleaved).
    """
    model, mu0, Sigma0, y = args = problem
    T, N = y.shape[0], model.A.shape[0]
    ref = float(ours(*args))
    jitted, plain, compile_s = {OURS_FULL: (full_recursion, args)}, {}, {}
    check(OURS_FULL, full_recursion(*args), ref)
    if HAS_STEADY_STATE:
        check(OURS_STEADY, steady_state_loglik(*args), ref)
        jitted[OURS_STEADY] = (steady_state_loglik, args)
    for impl, steady_state in NUMBA.items():
        fn, *compile_s[impl] = numba_call(model, mu0, Sigma0, y, steady_state)
        check(impl, fn(), ref)
        plain[impl] = fn
    for impl, tolerance, rtol in ((STATSMODELS, 0.0, RTOL),
                                  (STATSMODELS_DEFAULT, STATSMODELS_DEFAULT_TOL,
                                   STATSMODELS_DEFAULT_RTOL)):
        fn = peers.statsmodels_loglik(model, mu0, Sigma0, y, tolerance=tolerance)
        check(impl, fn(), ref, rtol)
        plain[impl] = fn
    params, fn = peers.dynamax_loglik(model, mu0, Sigma0)
    check_dynamax(*args, ref, fn)
    jitted[DYNAMAX] = (fn, (params, y))
    check_score(*args, ref, full_recursion)
    jitted[OURS_SCORE] = (jax.value_and_grad(full_recursion, argnums=(0, 1)), args)
    params, fn = peers.dynamax_value_and_grad(model, mu0, Sigma0)
    jitted[DYNAMAX_SCORE] = (fn, (params, y))

    calls = {}
    for impl, (fn, fn_args) in jitted.items():
        compiled, watch = compile_jitted(fn, *fn_args)
        compile_s[impl] = (watch.wall_s, watch.cpu_s)
        calls[impl] = lambda c=compiled, a=fn_args: jax.block_until_ready(c(*a))
    calls.update(plain)
    times = time_interleaved(calls, repeat)
    rows = []
    for impl, (run_s, run_cpu_s) in times.items():
        compile_wall, compile_cpu = compile_s.get(impl, (NAN, NAN))  # statsmodels: none
        t = Timing(compile_wall, run_s, repeat, compile_cpu, run_cpu_s)
        rows.append(make_row("settings", impl, N, T, 1, t, settings=group))
        print(f"{group:8s} T={T:<7d} {impl:58s} {run_s / T * 1e9:9.1f} ns/step "
              f"(CPU {run_cpu_s / T * 1e9:9.1f})  compile {t.compile_s * 1e3:6.0f} ms",
              file=sys.stderr, flush=True)
    return rows


def settings_child(group, quick):
    """Run in a child process: one settings group at every T; print JSON."""
    settings = apply_settings(group)
    repeat = 3 if quick else 7
    rows = []
    for T in SETTINGS_LENGTHS[quick]:
        rows += settings_rows(group, random_problem(0, 5, T), repeat)
    print(json.dumps({"settings": settings,
                      "disagreement": DISAGREEMENT, "rows": rows}))


def settings_groups(rows, quick):
    """Each settings group in a child process of its own, one after the other.

    XLA reads XLA_FLAGS once per process, so settings are compared only
    between processes; within a group every implementation runs under the
    same settings, so a ratio inside a group compares algorithms. Returns, per
    group, what the child reported of its settings.
    """
    seen = {}
    for group in GROUPS:
        out = subprocess.run([sys.executable, __file__, "--settings-child", group,
                              *(["--quick"] if quick else [])],
                             env=settings_env(group), stdout=subprocess.PIPE, text=True,
                             timeout=SETTINGS_TIMEOUT_S, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        rows += result.pop("rows")
        for name, rel in result["disagreement"].items():
            DISAGREEMENT[name] = max(DISAGREEMENT.get(name, 0.0), rel)
        seen[group] = result
    return seen


def run_case(case, problem, peers_to_run, rows, repeat):
    model, mu0, Sigma0, y = problem
    T, N = y.shape[0], model.A.shape[0]
    ref = float(ours(model, mu0, Sigma0, y))

    def add(impl, t, batch=1):
        rows.append(make_row(case, impl, N, T, batch, t))
        print(f"{case:18s} {impl:44s} N={N:<3d} T={T:<7d} batch={batch:<6d}"
              f" {t.run_s * 1e6:12.1f} us (CPU {t.run_cpu_s * 1e6:12.1f})"
              f"  compile {t.compile_s * 1e3:6.0f} ms (CPU {t.compile_cpu_s * 1e3:6.0f})", flush=True)

    t = time_jitted(ours, model, mu0, Sigma0, y, repeat=repeat)
    add("ours: kalman_filter(...).loglik (jit)", t)
    if "grad" in peers_to_run:
        grad, grad_ad = jax.grad(loglik, argnums=(0, 1)), jax.grad(ours, argnums=(0, 1))
        check_gradient("ours vs autodiff", grad(model, mu0, Sigma0, y),
                       grad_ad(model, mu0, Sigma0, y), GRAD_RTOL["autodiff"])
        t = time_jitted(grad, model, mu0, Sigma0, y, repeat=repeat)
        add("ours: gradient A,C,G,H,mu0 (jit)", t)
        t = time_jitted(grad_ad, model, mu0, Sigma0, y, repeat=repeat)
        add("autodiff: gradient A,C,G,H,mu0 (jit)", t)
    if "score" in peers_to_run:
        score_rows(add, model, mu0, Sigma0, y, repeat, ref)
    if "batch" in peers_to_run:
        batch_rows(add, model, mu0, Sigma0, y, 1000, repeat, ref)
    if "parallel" in peers_to_run:
        parallel_rows(add, T, ref)
    if "dynamax" in peers_to_run:
        params, fn = peers.dynamax_loglik(model, mu0, Sigma0)
        check_dynamax(model, mu0, Sigma0, y, ref, fn)
        t = time_jitted(fn, params, y, repeat=repeat)
        add("dynamax lgssm_filter (jit)", t)
    if "statsmodels" in peers_to_run:
        fn = peers.statsmodels_loglik(model, mu0, Sigma0, y)
        check("statsmodels", fn(), ref)
        add(STATSMODELS, time_calls(fn, repeat=repeat))
        fn = peers.statsmodels_loglik(model, mu0, Sigma0, y, tolerance=STATSMODELS_DEFAULT_TOL)
        check(STATSMODELS_DEFAULT, fn(), ref, STATSMODELS_DEFAULT_RTOL)
        add(STATSMODELS_DEFAULT, time_calls(fn, repeat=repeat))
    if "numba" in peers_to_run:
        for impl, steady_state in NUMBA.items():
            fn, compile_s, compile_cpu_s = numba_call(model, mu0, Sigma0, y, steady_state)
            check(impl, fn(), ref)
            t = time_calls(fn, repeat=repeat)
            add(impl, t._replace(compile_s=compile_s, compile_cpu_s=compile_cpu_s))
    numpy_args = (LSSModel(*(np.asarray(m) for m in model)), np.asarray(mu0),
                  np.asarray(Sigma0), np.asarray(y))
    if "numpy" in peers_to_run:
        check("numpy", kalman_filter_numpy(*numpy_args, jitter=0.0)[0], ref)
        add("NumPy loop", time_calls(kalman_filter_numpy, *numpy_args, repeat=repeat))
    if "filterpy" in peers_to_run:
        check("filterpy", peers.filterpy_loglik(*numpy_args), ref)
        add("filterpy", time_calls(peers.filterpy_loglik, *numpy_args, repeat=repeat))


def batch_scaling(rows, sizes, repeat):
    for N in (2, 5):
        model, mu0, Sigma0, y = random_problem(3, N, 100)
        for n in sizes:
            run_case_rows = []

            def add(impl, t, batch=1, N=N):
                run_case_rows.append(make_row("batch scaling", impl.split(" (")[0], N, 100,
                                              batch, t))

            batch_rows(add, model, mu0, Sigma0, y, n, repeat)
            for r in run_case_rows:
                print(f"batch N={N} {n:6d} {r['implementation']:34s} "
                      f"{r['ns_per_step']:8.1f} ns per step per model", flush=True)
            rows += run_case_rows


SCORE = {  # column of the score table -> implementation in the rows
    "loglik": "ours: kalman_loglik (jit)",
    "score": "ours: value_and_grad kalman_loglik (jit)",
    "autodiff": "autodiff: value_and_grad kalman_filter (jit)",
    "dynamax": "dynamax: value_and_grad lgssm_filter (jit)",
}
TARGETS = {"ratio": 2.5, "ratio_aim": 2.0, "dynamax_speedup": 10.0, "score_compile_s": 0.5,
           "parallel_compile_s": 3.0}


def machine():
    """One line on where and when the numbers were taken, and how busy the machine was."""
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    return (f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, jax {jax.__version__}")


def code_version():
    """The commit the run measured, and whether lecture_utils differed from it."""
    root = Path(__file__).resolve().parent.parent

    def git(*args):
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True,
                              text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "lecture_utils", "benchmarks/bench_kalman.py",
                "benchmarks/peers.py")
    return f"commit {commit}" + (" with uncommitted changes to the measured code" if dirty else "")


def load():
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def fmt_time(us):
    return "" if np.isnan(us) else (f"{us / 1e3:,.2f} ms" if us >= 1e3 else f"{us:,.1f} us")


def fmt_ms(ms):
    return "" if np.isnan(ms) else f"{ms:,.0f} ms"


def best(r, kind="run"):
    """The smaller of a row's CPU and wall time (us for runs, ms for compiles).

    Each is at least, roughly, the time on an idle machine: wall time grows
    with other processes' load; CPU time counts every thread XLA runs a call
    or a compilation on.
    """
    if kind == "run":
        return np.fmin(r["run_cpu_us"], r["run_us"])
    return np.fmin(r["compile_cpu_ms"], r["compile_ms"])


def score_table(rows):
    """The score section: one line per T, with the ratios the targets are about."""
    by = {(r["T"], r["implementation"]): r for r in rows if r["case"] == "score"}
    Ts = sorted({T for T, _ in by})
    lines = ["", "## The score: log-likelihood and its gradient, N = 5, M = 2", "",
             "Each time is the smaller of the CPU time (this process, all threads) and the wall "
             "time of the table above: each is at least, roughly, the time on an idle machine "
             "(wall time grows with the shared machine's load; CPU time counts every thread XLA "
             "runs a call or a compilation on). Gradient w.r.t. A, C, G, H and mu0 (dynamax: "
             "w.r.t. its parameters: initial mean and covariance, A, Q = CC', G, R = HH'). "
             "Ratio = value and gradient / value alone (kalman_loglik); dynamax / ours = "
             "dynamax's value and gradient / ours. Compile times in seconds.", "",
             "| T | value | value + gradient | ratio | autodiff value + gradient | "
             "dynamax value + gradient | dynamax / ours | compile value | compile value + "
             "gradient | compile autodiff | compile dynamax |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    summary = []
    for T in Ts:
        got = {k: by[(T, impl)] for k, impl in SCORE.items()}
        run = {k: best(r) for k, r in got.items()}
        ratio, speedup = run["score"] / run["loglik"], run["dynamax"] / run["score"]
        summary.append((ratio, speedup, best(got["score"], "compile") / 1e3,
                        got["score"]["run_cpu_us"] / got["loglik"]["run_cpu_us"],
                        got["score"]["run_us"] / got["loglik"]["run_us"]))
        compiles = " | ".join(f"{best(got[k], 'compile') / 1e3:.2f}" for k in SCORE)
        lines.append(f"| {T:,} | {fmt_time(run['loglik'])} | {fmt_time(run['score'])} | "
                     f"{ratio:.2f} | {fmt_time(run['autodiff'])} | {fmt_time(run['dynamax'])} | "
                     f"{speedup:.1f}x | {compiles} |")
    if not summary:
        return lines, []
    ratio, speedup, compile_s, cpu_ratio, wall_ratio = np.array(summary).T
    met = {True: "met", False: "NOT met"}

    def listed(values, unit=""):
        return ", ".join(f"{v:.2f}{unit}" for v in values)

    verdicts = [
        f"value + gradient at most {TARGETS['ratio']:g}x the value alone at every T "
        f"(aim {TARGETS['ratio_aim']:g}x): {met[bool(np.all(ratio <= TARGETS['ratio']))]} "
        f"({listed(ratio)}; in CPU time alone {listed(cpu_ratio)}, in wall time alone "
        f"{listed(wall_ratio)})",
        f"ours at least {TARGETS['dynamax_speedup']:g}x faster than dynamax's value and gradient "
        f"at every T: {met[bool(np.all(speedup >= TARGETS['dynamax_speedup']))]} "
        f"({listed(speedup, 'x')})",
        f"value + gradient compiles in at most {TARGETS['score_compile_s']:g} s: "
        f"{met[bool(np.all(compile_s <= TARGETS['score_compile_s']))]} "
        f"({listed(compile_s, ' s')})",
    ]
    parallel = [r for r in rows if r["case"] == "T scaling" and r["T"] == 100_000
                and r["implementation"].startswith("ours: method='parallel'")]
    if parallel:
        c, w = parallel[0]["compile_cpu_ms"] / 1e3, parallel[0]["compile_ms"] / 1e3
        verdicts.append(f"method='parallel' compiles in at most {TARGETS['parallel_compile_s']:g} s "
                        f"at T = 100,000 (in a fresh child process): "
                        f"{met[bool(min(c, w) <= TARGETS['parallel_compile_s'])]} "
                        f"({min(c, w):.2f} s; CPU {c:.2f} s, wall {w:.2f} s)")
    return lines, verdicts


ISSUE_21 = {"floor_ratio": 1.2, "steady_speedup": 10.0, "one_call_vs_statsmodels": 0.5,
            "score_ratio": 2.5, "score_compile_s": 0.5}
HEADLINE_T = {"per_step": 10_000, "one_call": 100}
SETTINGS_IMPLS = [OURS_FULL, OURS_STEADY, *NUMBA, STATSMODELS, STATSMODELS_DEFAULT, DYNAMAX,
                  OURS_SCORE, DYNAMAX_SCORE]
NOT_AVAILABLE = "not available"


def settings_timer(rows):
    """``time(group, T, impl, kind="run")``: a settings row's best time (see best); NaN if none."""
    by = {(r["settings"], r["T"], r["implementation"]): r for r in rows if r["case"] == "settings"}

    def time(group, T, impl, kind="run"):
        r = by.get((group, T, impl))
        return NAN if r is None else float(best(r, kind))

    return time, sorted({T for _, T, _ in by}), {impl for _, _, impl in by}


def settings_section(rows, seen):
    """The settings groups: headline table, per step at every T, the score, issue 21's targets."""
    run, Ts, present = settings_timer(rows)
    impls = [i for i in SETTINGS_IMPLS if i in present]

    def pair(fmt, values):
        return " | ".join(fmt(v) for v in values)

    def ns(us, T):
        return "" if np.isnan(us) else f"{us * 1e3 / T:,.0f} ns"

    T1, T0 = HEADLINE_T["per_step"], HEADLINE_T["one_call"]
    tuned, default = seen["tuned"]["settings"], seen["default"]["settings"]
    lines = ["", "## The Kalman core at the speed floor, with default and with tuned settings "
             "(N = 5, M = 2)", "",
             "Each implementation runs twice, in two child processes, one per settings group; "
             "within a process every implementation shares its settings, so a ratio within a "
             "group compares algorithms, and the two columns of an implementation compare "
             "settings. *default*: XLA's own settings (`XLA_FLAGS` unset, asynchronous dispatch "
             f"on, `{OPT_OUT_ENV}=1`). *tuned*: the settings `import lecture_utils` applies, "
             f"`XLA_FLAGS={tuned['XLA_FLAGS']}` (a loop body touching fewer than that many "
             "bytes compiles into one native kernel on XLA:CPU) and "
             f"`jax_cpu_enable_async_dispatch={tuned['async_dispatch']}`; "
             "`import lecture_utils` applied both. Same data (seed 0) in both. In each process the "
             "implementations are timed in turn, one sample of each per round "
             "(lecture_utils.timing.time_interleaved), so that a change of load falls on all of them. "
             "Times are the smaller of CPU and wall time; compiles are JAX's (trace, lower, "
             "compile, caches bypassed) or numba's first call. numba and statsmodels do not "
             "read XLA's settings: their two columns differ only by the machine's load, "
             "a measure of how far two processes' numbers can be compared. Before timing, "
             f"every value was checked against ours (jitter = 0) to {RTOL:g} relative, "
             f"statsmodels' default to {STATSMODELS_DEFAULT_RTOL:g}, the tolerance that holds "
             "for it: in this run it differed by at most "
             f"{DISAGREEMENT.get(STATSMODELS_DEFAULT, NAN):.2g}, the numba loop by "
             f"{max(DISAGREEMENT.get(k, NAN) for k in NUMBA):.2g}"
             + (f", ours with the switch by {DISAGREEMENT.get(OURS_STEADY, NAN):.2g}"
                if HAS_STEADY_STATE else "") + ".", "",
             f"| implementation | per step, T = {T1:,}: default | tuned | one call, "
             f"T = {T0}: default | tuned | compile (T = {T0}): default | tuned | "
             f"per step / numba floor (T = {T1:,}): default | tuned |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    floor = {g: run(g, T1, "numba loop, full recursion") for g in GROUPS}
    for impl in SETTINGS_IMPLS:
        if impl not in impls:
            if impl == OURS_STEADY:
                lines.append(f"| {impl} | {NOT_AVAILABLE} (kalman_loglik has no steady_state "
                             "keyword at this commit) | | | | | | | |")
            continue
        per_step = [run(g, T1, impl) for g in GROUPS]
        vs_floor = [p / floor[g] for p, g in zip(per_step, GROUPS)]
        lines.append(f"| {impl} | {pair(lambda v: ns(v, T1), per_step)} | "
                     f"{pair(fmt_time, [run(g, T0, impl) for g in GROUPS])} | "
                     f"{pair(fmt_ms, [run(g, T0, impl, 'compile') for g in GROUPS])} | "
                     f"{pair(lambda v: '' if np.isnan(v) else f'{v:.2f}x', vs_floor)} |")
    lines += ["", "Per step at every T (run time / T):", "",
              "| implementation | " + " | ".join(f"T = {T:,}: default | tuned" for T in Ts) + " |",
              "|---|" + "---:|---:|" * len(Ts)]
    for impl in impls:
        lines.append(f"| {impl} | " + " | ".join(
            pair(lambda v, T=T: ns(v, T), [run(g, T, impl) for g in GROUPS]) for T in Ts) + " |")
    lines += ["", "The score in the same processes: value and gradient of ours (kalman_loglik, "
              "its hand-derived reverse rule) and of dynamax; ratio = value and gradient / value "
              "alone; compile of the value and gradient.", "",
              "| T | value: default | tuned | value + gradient: default | tuned | ratio: default "
              "| tuned | compile value + gradient: default | tuned | dynamax value + gradient: "
              "default | tuned | dynamax / ours: default | tuned |",
              "|---:|" + "---:|" * 12]
    for T in Ts:
        value = [run(g, T, OURS_FULL) for g in GROUPS]
        grad = [run(g, T, OURS_SCORE) for g in GROUPS]
        dyn = [run(g, T, DYNAMAX_SCORE) for g in GROUPS]
        comp = [run(g, T, OURS_SCORE, "compile") / 1e3 for g in GROUPS]
        lines.append(f"| {T:,} | {pair(fmt_time, value)} | {pair(fmt_time, grad)} | "
                     f"{pair(lambda v: f'{v:.2f}', [b / a for a, b in zip(value, grad)])} | "
                     f"{pair(lambda v: f'{v:.2f} s', comp)} | {pair(fmt_time, dyn)} | "
                     f"{pair(lambda v: f'{v:.1f}x', [d / o for d, o in zip(dyn, grad)])} |")
    lines += ["", "Targets of issue 21, judged on the *tuned* group (the settings `import "
              "lecture_utils` applies), the *default* group's figure after it; every ratio "
              "within one process:", ""]
    lines += [f"- {v}" for v in issue_21_verdicts(rows)]
    lines += ["", f"The default group ran with `XLA_FLAGS={default['XLA_FLAGS']!r}`, "
              f"`jax_cpu_enable_async_dispatch={default['async_dispatch']}`."]
    return lines


def issue_21_verdicts(rows):
    """Each target of issue 21 as met or missed, with its figures (tuned, then default)."""
    run, Ts, _ = settings_timer(rows)
    met = {True: "met", False: "NOT met"}
    T1, T0 = HEADLINE_T["per_step"], HEADLINE_T["one_call"]
    verdicts = []
    if T1 in Ts:
        floor = {g: run(g, T1, OURS_FULL) / run(g, T1, "numba loop, full recursion")
                 for g in GROUPS}
        verdicts.append(
            f"per step at T = {T1:,}, full recursion: ours at most {ISSUE_21['floor_ratio']:g}x "
            f"the numba loop: {met[bool(floor['tuned'] <= ISSUE_21['floor_ratio'])]} "
            f"({floor['tuned']:.2f}x: {run('tuned', T1, OURS_FULL) * 1e3 / T1:.0f} vs "
            f"{run('tuned', T1, 'numba loop, full recursion') * 1e3 / T1:.0f} ns per step; "
            f"default settings {floor['default']:.2f}x)")
        numba_speedup = {g: run(g, T1, STATSMODELS_DEFAULT) / run(g, T1, "numba loop, "
                                                                  "steady-state switch")
                         for g in GROUPS}
        if HAS_STEADY_STATE:
            speedup = {g: run(g, T1, STATSMODELS_DEFAULT) / run(g, T1, OURS_STEADY)
                       for g in GROUPS}
            verdicts.append(
                f"per step at T = {T1:,}, with the steady-state switch: ours at least "
                f"{ISSUE_21['steady_speedup']:g}x faster than statsmodels' default: "
                f"{met[bool(speedup['tuned'] >= ISSUE_21['steady_speedup'])]} "
                f"({speedup['tuned']:.1f}x; default settings {speedup['default']:.1f}x; the "
                f"numba loop's switch: {numba_speedup['tuned']:.1f}x)")
        else:
            verdicts.append(
                f"per step at T = {T1:,}, with the steady-state switch: ours at least "
                f"{ISSUE_21['steady_speedup']:g}x faster than statsmodels' default: "
                f"{NOT_AVAILABLE} (kalman_loglik has no steady_state keyword at this commit; "
                f"the numba loop's switch is {numba_speedup['tuned']:.1f}x faster)")
    if T0 in Ts:
        one = {g: run(g, T0, OURS_FULL) / run(g, T0, STATSMODELS_DEFAULT) for g in GROUPS}
        verdicts.append(
            f"one call at T = {T0}: ours at most {ISSUE_21['one_call_vs_statsmodels']:g}x "
            f"statsmodels' default: "
            f"{met[bool(one['tuned'] <= ISSUE_21['one_call_vs_statsmodels'])]} "
            f"({one['tuned']:.2f}x: {fmt_time(run('tuned', T0, OURS_FULL))} vs "
            f"{fmt_time(run('tuned', T0, STATSMODELS_DEFAULT))}; default settings "
            f"{one['default']:.2f}x"
            + (f"; with the switch {fmt_time(run('tuned', T0, OURS_STEADY))}"
               if HAS_STEADY_STATE else "") + ")")
    ratio = {g: [run(g, T, OURS_SCORE) / run(g, T, OURS_FULL) for T in Ts] for g in GROUPS}
    listed = {g: ", ".join(f"{v:.2f}" for v in ratio[g]) for g in GROUPS}
    Ts_text = ", ".join(f"{T:,}" for T in Ts)
    verdicts.append(
        f"value and gradient at most {ISSUE_21['score_ratio']:g}x the value at T = {Ts_text}: "
        f"{met[bool(np.all(np.array(ratio['tuned']) <= ISSUE_21['score_ratio']))]} "
        f"({listed['tuned']}; default settings {listed['default']})")
    compile_s = {g: [run(g, T, OURS_SCORE, "compile") / 1e3 for T in Ts] for g in GROUPS}
    verdicts.append(
        f"value and gradient compile in under {ISSUE_21['score_compile_s']:g} s at every T: "
        f"{met[bool(np.all(np.array(compile_s['tuned']) < ISSUE_21['score_compile_s']))]} "
        f"({', '.join(f'{v:.2f} s' for v in compile_s['tuned'])}; default settings "
        f"{', '.join(f'{v:.2f} s' for v in compile_s['default'])})")
    return verdicts


def write(rows, started, load_before, seen):
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / "kalman.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    main_settings = current_settings()
    lines = ["# Kalman filter log-likelihood and its gradient, CPU, float64 (one run)", "",
             f"Run on {started:%Y-%m-%d %H:%M} UTC, {machine()}, {code_version()}. "
             "The machine was shared with "
             f"other work: load before the run `{load_before}`, after `{load()}`; "
             "with more runnable processes than cores, wall times are inflated by an unknown "
             "factor, CPU times (this process, all threads) much less. A call on one thread "
             "takes about its CPU time on an idle machine; a call or a compilation on several "
             "threads (the sharded batch; XLA may compile on several) takes less wall time "
             "than its CPU time there. The figure, kalman_scaling.png, shows the smaller of the two."]
    lines += settings_section(rows, seen)
    lines += ["", "## Every implementation, one after another in the main process", "",
              f"This process ran with `XLA_FLAGS={main_settings['XLA_FLAGS']}` (one CPU device "
              "per core, for the sharded batch) and `jax_cpu_enable_async_dispatch="
              f"{main_settings['async_dispatch']}`; each implementation's samples are taken "
              "together, before the next one's. Ours runs as called by default"
              f"{OURS_DEFAULTS}. The settings groups' rows are in kalman.csv "
              "(case `settings`).", "",
              "| case | implementation | N | T | batch | run | per step | compile | "
              "run (CPU) | compile (CPU) |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r["settings"] != "main":
            continue
        lines.append(f"| {r['case']} | {r['implementation']} | {r['N']} | {r['T']:,} | "
                     f"{r['batch']:,} | {r['run_us']:,.1f} us | {r['ns_per_step']:,.0f} ns | "
                     f"{fmt_ms(r['compile_ms'])} | {fmt_time(r['run_cpu_us'])} | "
                     f"{fmt_ms(r['compile_cpu_ms'])} |")
    lines += ["", f"All log-likelihoods agree with ours to {RTOL:g} relative (checked "
              "before timing). Per step = run time / (T x batch). Gradients were checked "
              f"before timing too: kalman_loglik's against autodiff through kalman_filter to "
              f"{GRAD_RTOL['autodiff']:g}, dynamax's (carried back to A, C, G, H, mu0 by the "
              f"chain rule, and its G block directly) against ours to {GRAD_RTOL['dynamax']:g}, "
              "each array's largest error relative to its largest entry. dynamax is checked "
              "with its diagonal boost of S_t set to 0 (the exact filter, as ours) and timed "
              f"as shipped (boost 1e-9; its value then agrees with ours to {DYNAMAX_RTOL:g})."
              f" {STATSMODELS_DEFAULT} is checked to {STATSMODELS_DEFAULT_RTOL:g} relative, "
              "the tolerance that holds: its gain freezes once the squared change of the "
              "predicted covariance is below 1e-19, and its value differed from ours by at "
              f"most {DISAGREEMENT.get(STATSMODELS_DEFAULT, NAN):.2g} relative in this run. "
              "The numba loop (benchmarks/peers.py, compiled for each N, the compile column its "
              "first call) agreed to "
              f"{max(DISAGREEMENT.get(k, NAN) for k in NUMBA):.2g} relative, its steady-state "
              "switch included."]
    score_lines, verdicts = score_table(rows)
    lines += score_lines
    if verdicts:
        lines += ["", "Targets (on the times of the score table, the smaller of CPU and "
                  "wall time; in this process, one implementation after another):", ""]
        lines += [f"- {v}" for v in verdicts]
    (RESULTS / "kalman.md").write_text("\n".join(lines) + "\n")
    plot([r for r in rows if r["settings"] == "main"])
    print("\n".join(lines))


def plot(rows):
    """kalman_scaling.png, each time the smaller of CPU and wall time (see best)."""
    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    axes = axes.ravel()
    for ax, case, x in [(axes[0], "T scaling", "T"), (axes[1], "N scaling", "N"),
                        (axes[3], "score", "T")]:
        for impl in sorted({r["implementation"] for r in rows if r["case"] == case}):
            pts = [(r[x], best(r)) for r in rows
                   if r["case"] == case and r["implementation"] == impl]
            ax.loglog(*zip(*pts), "o-", label=impl)
        if x == "N":
            ns = sorted({r["N"] for r in rows if r["case"] == case})
            ax.set_xticks(ns, [str(n) for n in ns], minor=False)
            ax.minorticks_off()
        title = ("Score (value and gradient), N = 5" if case == "score"
                 else f"Log-likelihood: {case}")
        ax.set(xlabel=x, ylabel="time per call (us)", title=title)
        ax.legend(fontsize=8)
    batch = [r for r in rows if r["case"] == "batch scaling"]
    for impl, N in sorted({(r["implementation"], r["N"]) for r in batch}):
        pts = [(r["batch"], best(r) * 1e3 / (r["T"] * r["batch"])) for r in batch
               if r["implementation"] == impl and r["N"] == N]
        axes[2].loglog(*zip(*pts), "o-" if N == 5 else "s--", label=f"{impl}, N={N}")
    axes[2].axhline(200, color="grey", ls=":", label="target: 200 ns")
    axes[2].set(xlabel="batch size (T = 100)", ylabel="ns per time step per model",
                title="Batched log-likelihood")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "kalman_scaling.png", dpi=110)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small grid, for a smoke run")
    parser.add_argument("--parallel-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--settings-child", choices=GROUPS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.parallel_child:
        return parallel_child(args.parallel_child)
    if args.settings_child:
        return settings_child(args.settings_child, args.quick)
    started, load_before = datetime.datetime.now(datetime.timezone.utc), load()
    quick = args.quick
    repeat = 3 if quick else 7
    rows = []
    seen = settings_groups(rows, quick)
    everything = {"grad", "batch", "dynamax", "statsmodels", "numba", "numpy", "filterpy"}
    lengths = (100, 1_000) if quick else (100, 1_000, 10_000, 100_000)
    run_case("source N=2, T=20", source_problem(2, 20), everything, rows, repeat)
    run_case("source N=5, T=100", source_problem(5, 100), everything, rows, repeat)
    for T in lengths:
        slow = {"numpy"} if T <= 10_000 else set()
        slow |= {"filterpy"} if T <= 1_000 else set()
        run_case("T scaling", random_problem(0, 5, T),
                 {"dynamax", "statsmodels", "numba", "parallel"} | slow,
                 rows, repeat)
    for T in lengths:
        run_case("score", random_problem(0, 5, T), {"score"}, rows, repeat)
    for N in (2, 8) if quick else (2, 4, 8, 16, 32):
        run_case("N scaling", random_problem(1, N, 1_000), {"dynamax", "statsmodels", "numba"},
                 rows, repeat)
    batch_scaling(rows, (1, 100) if quick else (1, 10, 100, 1_000, 10_000), repeat)
    write(rows, started, load_before, seen)


if __name__ == "__main__":
    main()
