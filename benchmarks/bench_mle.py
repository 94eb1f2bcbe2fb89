"""Time to a fitted model: lecture 3's maximum-likelihood fit, ours next to statsmodels.

Usage:
    python benchmarks/bench_mle.py [--repeats 3] [--T 500 5000 50000] [--no-breakdown]

The model is lecture 3's (lectures/kalman_estimation.md, "Estimation by
Maximum Likelihood"): N = M = 2, G = I, nine parameters, A = B / sqrt(1 + |B|_2^2),
C lower triangular with a positive diagonal, H diagonal and positive. That
is exactly statsmodels' VAR(1) with measurement error,
``VARMAX(y, order=(1, 0), trend="n", measurement_error=True)``: A free,
C C' unstructured, H H' diagonal.

Common likelihood: both start x_0 from the stationary distribution of the
model being evaluated (statsmodels' default; ours solves the discrete
Lyapunov equation inside the objective), so both maximise the same function.
Each optimum is then evaluated by the plain NumPy filter
(``kalman_filter_numpy``, jitter=0) with that same prior, and statsmodels'
own log-likelihood is checked against the NumPy filter at its optimum.

Every fit runs in a fresh Python process. ``fit`` is measured inside the
child after its imports and after loading the data (for ours: building the
objective, tracing, compiling, optimising; for statsmodels: building the
model and ``fit()``); ``process`` is the parent's wall time around the whole
child, imports included. Ours "cold" starts with an empty persistent
compilation cache directory, ours "warm" is a second process given the same
directory. All children run with one BLAS thread (OPENBLAS_NUM_THREADS=1):
statsmodels' filter calls BLAS on 2x2 matrices, and with the default thread
pool on a busy 2-core machine its fit took 10-25x longer.

The compile breakdown (trace, lower, XLA compile, HLO size, run time of one
call) runs each configuration in its own process with the persistent cache
off: the previous optimiser (optax L-BFGS in ``lax.while_loop``) against one
compiled value-and-gradient, ``kalman_filter(...).loglik`` against
``kalman_loglik``, XLA:CPU's default code emitters against
``lbfgs_minimize``'s compiler options, and the unrolled small-matrix code of
``lecture_utils.kalman._linalg`` against the library routines (N = 2 and 5).

Writes benchmarks/results/mle.{md,csv}.
"""

import argparse
import csv
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
HERE = Path(__file__).resolve()
PHI_TRUE = np.array([0.9, 0.1, -0.1, 0.8, 0.1, 0.0, 0.1, 0.05, 0.05])
PHI_START = np.array([0.5, 0.0, 0.0, 0.5, 0.3, 0.0, 0.3, 0.3, 0.3])
TOL = 1e-6  # ours: gradient norm of the per-observation objective (statsmodels: sup norm 1e-5)
SM_TIMEOUT_S = 60.0


# --------------------------------------------------------------------------- model (NumPy)

def model_numpy(phi):
    """(A, C, G, H) from the nine natural parameters."""
    A = phi[:4].reshape(2, 2)
    C = np.array([[phi[4], 0.0], [phi[5], phi[6]]])
    return A, C, np.eye(2), np.diag(phi[7:])


def stationary_cov_numpy(A, Q):
    """Solve Sigma = A Sigma A' + Q."""
    n = A.shape[0]
    return np.linalg.solve(np.eye(n * n) - np.kron(A, A), Q.ravel()).reshape(n, n)


def loglik_numpy(phi, y):
    """Log-likelihood with the stationary prior, by the independent NumPy filter (jitter 0)."""
    from lecture_utils.kalman import kalman_filter_numpy
    A, C, G, H = model_numpy(phi)
    Sigma0 = stationary_cov_numpy(A, C @ C.T)
    return float(kalman_filter_numpy((A, C, G, H), np.zeros(2), Sigma0, y, jitter=0.0)[0])


def phi_from_statsmodels(params):
    """statsmodels' VARMAX parameters -> ours: A row-major, Cholesky of C C', sd of H."""
    p = np.asarray(params)
    A = np.array([[p[0], p[1]], [p[2], p[3]]])
    return np.concatenate([A.ravel(), p[4:7], np.sqrt(p[7:9])])


def simulate(T, seed=2026):
    """Data from the true model, x_0 drawn from the stationary distribution (NumPy)."""
    rng = np.random.default_rng(seed)
    A, C, G, H = model_numpy(PHI_TRUE)
    x = np.linalg.cholesky(stationary_cov_numpy(A, C @ C.T)) @ rng.normal(size=2)
    y = np.empty((T, 2))
    for t in range(T):
        x = A @ x + C @ rng.normal(size=2)
        y[t] = G @ x + H @ rng.normal(size=2)
    return y


# --------------------------------------------------------------------------- children

def jax_objective(y, use_loglik=True):
    """Lecture 3's objective (per observation), stationary prior; JAX imported here."""
    import jax
    import jax.numpy as jnp

    from lecture_utils.kalman import kalman_filter, kalman_loglik
    from lecture_utils.simulation import LSSModel

    T = y.shape[0]
    y = jnp.asarray(y)

    def natural(theta):
        B = theta[:4].reshape(2, 2)
        A = B / jnp.sqrt(1.0 + jnp.linalg.norm(B, 2) ** 2)
        return jnp.concatenate([A.ravel(), jnp.exp(theta[4:5]), theta[5:6], jnp.exp(theta[6:])])

    def objective(theta):
        phi = natural(theta)
        A = phi[:4].reshape(2, 2)
        C = jnp.array([[phi[4], 0.0], [phi[5], phi[6]]])
        model = LSSModel(A, C, jnp.eye(2), jnp.diag(phi[7:]))
        Q = C @ C.T
        Sigma0 = jnp.linalg.solve(jnp.eye(4) - jnp.kron(A, A), Q.ravel()).reshape(2, 2)
        if use_loglik:
            ll = kalman_loglik(model, jnp.zeros(2), Sigma0, y)
        else:
            ll = kalman_filter(model, jnp.zeros(2), Sigma0, y).loglik
        return -ll / T

    def unconstrained(phi):
        A = phi[:4].reshape(2, 2)
        B = A / np.sqrt(1.0 - np.linalg.norm(A, 2) ** 2)
        return np.concatenate([B.ravel(), np.log(phi[4:5]), phi[5:6], np.log(phi[6:])])

    return objective, natural, jnp.asarray(unconstrained(PHI_START)), jax


def child_ours(data_path):
    y = np.load(data_path)
    import lecture_utils  # noqa: F401  (float64, persistent cache from the environment)
    from lecture_utils.optim import lbfgs_minimize
    start = time.perf_counter()
    objective, natural, theta0, jax = jax_objective(y)
    result = lbfgs_minimize(objective, theta0, tol=TOL)
    fit_s = time.perf_counter() - start
    phi = np.asarray(natural(result.params))
    return {"fit_s": fit_s, "phi": phi.tolist(), "iterations": int(result.iterations),
            "grad_norm": float(result.grad_norm), "loglik": -float(result.value) * y.shape[0]}


def child_statsmodels(data_path):
    y = np.load(data_path)
    import warnings

    from statsmodels.tsa.statespace.varmax import VARMAX
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "VARMAX with measurement error ... estimation" notes
        model = VARMAX(y, order=(1, 0), trend="n", measurement_error=True)
        res = model.fit(disp=False)
    fit_s = time.perf_counter() - start
    return {"fit_s": fit_s, "phi": phi_from_statsmodels(res.params).tolist(),
            "iterations": int(res.mle_retvals["iterations"]), "loglik": float(res.llf),
            "converged": bool(res.mle_retvals["converged"])}


def child_breakdown(spec):
    """Trace / lower / compile / run of one program, persistent cache off."""
    spec = json.loads(spec)
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    import lecture_utils.kalman._linalg as sl
    if spec.get("linalg") == "library":
        sl.MAX_UNROLLED_M, sl.MAX_BROADCAST_PRODUCT = 0, -1
    from lecture_utils.optim import CPU_COMPILER_OPTIONS
    from lecture_utils.timing import Stopwatch, time_calls
    options = CPU_COMPILER_OPTIONS if spec["options"] == "lbfgs_minimize" else {}
    jax.jit(lambda x: x + 1.0).lower(1.0).compile()  # XLA's one-time start-up, not counted

    if spec["program"] in ("value_and_grad", "value"):
        N, T = spec["N"], spec["T"]
        from lecture_utils.kalman import kalman_filter, kalman_loglik
        from lecture_utils.simulation import LSSModel
        rng = np.random.default_rng(0)
        A = rng.normal(size=(N, N))
        A *= 0.9 / np.max(np.abs(np.linalg.eigvals(A)))
        model = LSSModel(jnp.asarray(A), 0.3 * jnp.eye(N), jnp.asarray(rng.normal(size=(2, N))),
                         0.3 * jnp.eye(2))
        y = jnp.asarray(rng.normal(size=(T, 2)))
        if spec["loglik"] == "kalman_loglik":
            f = lambda m, y: kalman_loglik(m, jnp.zeros(N), jnp.eye(N), y, jitter=0.0)  # noqa: E731
        else:
            f = lambda m, y: kalman_filter(m, jnp.zeros(N), jnp.eye(N), y, jitter=0.0).loglik  # noqa: E731
        if spec["program"] == "value_and_grad":
            f = jax.value_and_grad(f)
        args = (model, y)
    else:  # the whole optimisation compiled as one program (the previous lbfgs_minimize)
        y = simulate(spec["T"])
        objective, _, theta0, _ = jax_objective(y, use_loglik=spec["loglik"] == "kalman_loglik")
        f, args = lambda theta: while_loop_lbfgs(objective, theta), (theta0,)

    with Stopwatch() as tracing:
        traced = jax.jit(f).trace(*args)
    with Stopwatch() as lowering:
        lowered = traced.lower()
    with Stopwatch() as compiling:
        compiled = lowered.compile(options)
    # One call per sample; the while_loop program is the whole optimisation: one sample.
    run = time_calls(lambda: jax.block_until_ready(compiled(*args)),
                     repeat=1 if spec["program"] == "while_loop" else 11, min_sample_s=0)
    return {"trace_s": tracing.wall_s, "lower_s": lowering.wall_s, "compile_s": compiling.wall_s,
            "run_s": run.run_s, "hlo_chars": len(lowered.as_text())}


def while_loop_lbfgs(fun, params, max_iter=500, tol=TOL):
    """The previous lbfgs_minimize: optax L-BFGS (zoom line search) inside lax.while_loop."""
    import jax
    import optax
    optimizer = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(fun)

    def step(carry):
        params, state = carry
        value, grad = value_and_grad(params, state=state)
        updates, state = optimizer.update(grad, state, params, value=value, grad=grad,
                                          value_fn=fun)
        return optax.apply_updates(params, updates), state

    def keep_going(carry):
        count = optax.tree.get(carry[1], "count")
        grad_norm = optax.tree.norm(optax.tree.get(carry[1], "grad"))
        return (count == 0) | ((count < max_iter) & (grad_norm >= tol))

    params, state = jax.lax.while_loop(keep_going, step, (params, optimizer.init(params)))
    value, grad = jax.value_and_grad(fun)(params)
    return params, value, optax.tree.norm(grad), optax.tree.get(state, "count")


# --------------------------------------------------------------------------- parent

def run_child(args, env_extra, timeout=None):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.update(env_extra)
    env = {k: v for k, v in env.items() if v is not None}  # None: unset
    start = time.perf_counter()
    out = subprocess.run([sys.executable, str(HERE), "--child", *args], env=env,
                         capture_output=True, text=True, timeout=timeout)
    process_s = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_s"] = process_s
    return result


def fits(T, repeats, workdir, rows, notes):
    data = Path(workdir) / f"y{T}.npy"
    np.save(data, simulate(T))
    y = np.load(data)
    samples = {"ours, cold cache": [], "ours, warm cache": [], "statsmodels VARMAX": []}
    for r in range(repeats):
        cache = Path(workdir) / f"cache-T{T}-{r}"
        cache.mkdir()
        env = {"JAX_COMPILATION_CACHE_DIR": str(cache), "LECTURE_UTILS_NO_CACHE": None,
               "JAX_ENABLE_COMPILATION_CACHE": None}
        samples["ours, cold cache"].append(run_child(["ours", str(data)], env))
        samples["ours, warm cache"].append(run_child(["ours", str(data)], env))
        try:
            samples["statsmodels VARMAX"].append(
                run_child(["statsmodels", str(data)], {}, timeout=SM_TIMEOUT_S + 30))
        except subprocess.TimeoutExpired:
            notes.append(f"T = {T:,}: statsmodels did not finish within {SM_TIMEOUT_S + 30:.0f} s.")
            break
        print(f"  T={T} repeat {r}: " + ", ".join(
            f"{k} {v[-1]['fit_s']:.2f} s" for k, v in samples.items() if v), flush=True)
    sm = samples["statsmodels VARMAX"]
    if not sm:
        samples.pop("statsmodels VARMAX")
    reference = {}
    for impl, runs in samples.items():
        phi = np.array(runs[0]["phi"])
        ll_numpy = loglik_numpy(phi, y)
        # Each reports the likelihood the NumPy filter gives: statsmodels' is the one we
        # think it is (exact filter), ours differs only by its relative jitter of 1e-8.
        np.testing.assert_allclose(runs[0]["loglik"], ll_numpy,
                                   rtol=1e-8 if impl.startswith("statsmodels") else 1e-7)
        reference[impl] = ll_numpy
        fit = [s["fit_s"] for s in runs]
        proc = [s["process_s"] for s in runs]
        rows.append({"T": T, "implementation": impl, "repeats": len(runs),
                     "fit_min_s": min(fit), "fit_median_s": statistics.median(fit),
                     "process_min_s": min(proc), "process_median_s": statistics.median(proc),
                     "iterations": runs[0]["iterations"], "loglik_numpy": ll_numpy})
    return samples


def breakdown_specs():
    """Before (the whole optimisation as one program) and after, then what the filter costs."""
    base = {"program": "value_and_grad", "N": 2, "T": 500, "linalg": "unrolled",
            "options": "default"}
    specs = [{"program": "while_loop", "T": 500, "loglik": "kalman_filter", "options": "default"}]
    for loglik in ("kalman_filter", "kalman_loglik"):
        specs.append({**base, "loglik": loglik})
        specs.append({**base, "loglik": loglik, "options": "lbfgs_minimize"})
        for N in (2, 5):
            if N == 5:
                specs.append({**base, "loglik": loglik, "N": N})
            specs.append({**base, "loglik": loglik, "N": N, "linalg": "library"})
    return specs


def machine():
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import jax
    import statsmodels
    return (f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; "
            f"Python {platform.python_version()}, jax {jax.__version__}, "
            f"statsmodels {statsmodels.__version__}, NumPy {np.__version__}")


def write(rows, breakdown, notes, header):
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / "mle.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for T in sorted({int(r["T"]) for r in rows}):
        ll = {r["implementation"]: float(r["loglik_numpy"]) for r in rows if int(r["T"]) == T}
        if "statsmodels VARMAX" in ll:
            notes.append(f"T = {T:,}: log-likelihood at our optimum minus at statsmodels' "
                         f"(both by the NumPy filter, stationary prior): "
                         f"{ll['ours, cold cache'] - ll['statsmodels VARMAX']:+.2e}.")
    fields = list(dict.fromkeys(k for b in breakdown for k in b))
    with open(RESULTS / "mle_compile.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(breakdown)
    lines = [
        "# Maximum-likelihood fit of lecture 3's model: ours next to statsmodels", "",
        header, "",
        "Each fit in a fresh process; `fit` is timed inside the process after imports "
        "(ours: build the objective, trace, compile, optimise; statsmodels: build VARMAX, "
        "`fit()`), `process` is the whole child process, imports included. "
        f"Ours: `lbfgs_minimize(objective, theta0, tol={TOL})` on `kalman_loglik` "
        "(cold: empty persistent compilation cache; warm: a second process reusing it). "
        "statsmodels: `VARMAX(y, order=(1, 0), trend='n', measurement_error=True).fit()`. "
        "Both with the stationary prior; one BLAS thread. min / median over repeats.", "",
        "| T | implementation | repeats | fit min | fit median | process min | "
        "process median | iterations | log-likelihood (NumPy filter) | fit median / statsmodels |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    sm = {int(r["T"]): float(r["fit_median_s"]) for r in rows
          if r["implementation"].startswith("statsmodels")}
    for r in rows:
        r = {k: (v if k == "implementation" else float(v)) for k, v in r.items()}
        r["T"], r["repeats"], r["iterations"] = int(r["T"]), int(r["repeats"]), int(r["iterations"])
        ratio = f"{r['fit_median_s'] / sm[r['T']]:.2f}" if r["T"] in sm else ""
        lines.append(
            f"| {r['T']:,} | {r['implementation']} | {r['repeats']} | {r['fit_min_s']:.2f} s | "
            f"{r['fit_median_s']:.2f} s | {r['process_min_s']:.2f} s | "
            f"{r['process_median_s']:.2f} s | {r['iterations']} | {r['loglik_numpy']:.6f} | "
            f"{ratio} |")
    lines += ["", *[f"- {n}" for n in notes], "",
              "## Where compile time goes (T = 500, persistent cache off, one process each)", "",
              "`options`: XLA:CPU defaults, or `lbfgs_minimize`'s compiler options "
              "(`xla_cpu_use_fusion_emitters=False`). `linalg`: the unrolled small-matrix code "
              "of `lecture_utils.kalman._linalg`, or the library routines (Cholesky, triangular "
              "solve, dot). `while_loop`: the previous `lbfgs_minimize`, the whole optimisation "
              "as one program (its run column is the whole optimisation).", "",
              "| program | log-likelihood | N | linalg | options | trace | lower | compile | "
              "HLO chars | run (one call) |",
              "|---|---|---:|---|---|---:|---:|---:|---:|---:|"]
    for b in breakdown:
        lines.append(
            f"| {b['program']} | {b['loglik']} | {b.get('N', 2)} | {b.get('linalg', 'unrolled')} | "
            f"{b['options']} | {b['trace_s']:.3f} s | {b['lower_s']:.3f} s | "
            f"{b['compile_s']:.3f} s | {b['hlo_chars']:,} | {1e3 * b['run_s']:.2f} ms |")
    (RESULTS / "mle.md").write_text("\n".join(lines) + "\n")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--T", type=int, nargs="*", default=[500, 5000, 50000],
                        help="no values: keep the fits of the last mle.csv, redo the breakdown")
    parser.add_argument("--no-breakdown", action="store_true")
    parser.add_argument("--breakdown-repeats", type=int, default=1)
    args = parser.parse_args()
    load_before = os.getloadavg()
    started = datetime.datetime.now().astimezone()
    rows, notes = [], []
    with tempfile.TemporaryDirectory(prefix="bench_mle_") as workdir:
        for T in args.T:
            if T > 5000 and rows:
                # statsmodels' fit grows linearly in T: skip it where it would exceed a minute.
                sm_5000 = [r for r in rows if r["implementation"].startswith("statsmodels")]
                if sm_5000 and sm_5000[-1]["fit_min_s"] * T / sm_5000[-1]["T"] > SM_TIMEOUT_S:
                    notes.append(f"T = {T:,} skipped: statsmodels would take about "
                                 f"{sm_5000[-1]['fit_min_s'] * T / sm_5000[-1]['T']:.0f} s.")
                    continue
            print(f"T = {T}", flush=True)
            fits(T, args.repeats, workdir, rows, notes)
    breakdown = []
    if not args.no_breakdown:
        for spec in breakdown_specs():
            runs = [run_child(["breakdown", json.dumps(spec)], {"LECTURE_UTILS_NO_CACHE": "1",
                                                                 "JAX_ENABLE_COMPILATION_CACHE": "false"})
                    for _ in range(args.breakdown_repeats)]
            best = min(runs, key=lambda r: r["trace_s"] + r["lower_s"] + r["compile_s"])
            breakdown.append({**spec, **{k: best[k] for k in
                                         ("trace_s", "lower_s", "compile_s", "run_s", "hlo_chars")}})
            print(f"  {spec}: compile {best['compile_s']:.3f} s", flush=True)
    if not args.T and (RESULTS / "mle.csv").exists():
        with open(RESULTS / "mle.csv") as f:
            rows = list(csv.DictReader(f))
    load_after = os.getloadavg()
    header = (f"Run {started:%Y-%m-%d %H:%M %Z} on {machine()}. Load average (1 min) "
              f"{load_before[0]:.1f} at the start, {load_after[0]:.1f} at the end: a shared "
              "machine, so compare rows of one run, not runs.")
    write(rows, breakdown or [{"program": "", "loglik": "", "options": "", "trace_s": 0,
                               "lower_s": 0, "compile_s": 0, "run_s": 0, "hlo_chars": 0}],
          notes, header)
    print((RESULTS / "mle.md").read_text())


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        kind, arg = sys.argv[2], sys.argv[3]
        sys.path.insert(0, str(HERE.parent.parent))
        if kind == "ours":
            out = child_ours(arg)
        elif kind == "statsmodels":
            out = child_statsmodels(arg)
        else:
            out = child_breakdown(arg)
        print(json.dumps(out))
    else:
        main()
