"""Bootstrap particle filter on the UC-SV model: ours against `particles` and a NumPy loop.

Usage: python benchmarks/bench_particles.py [--quick | --lecture]
Writes benchmarks/results/particles.md and particles.json (``--quick``: P =
1,000 and 10,000, fewer runs, nothing written; ``--lecture``: only the
lecture's cold run, added to the committed result).

The model is Stock and Watson's (2007) unobserved components with stochastic
volatility, on US inflation (statsmodels' macrodata ``infl``, 1959Q2-2009Q3,
T = 202 quarters), at the volatilities of volatility (0.2, 0.2). Three
implementations of the same algorithm (propagate from the transition, weight
by the observation density, systematic resampling when the effective sample
size falls below half the particles) are timed side by side:

* ours: ``lecture_utils.particle_filter.bootstrap_filter`` on the callbacks
  of ``lecture_utils.ucsv``, jitted, compilation timed apart;
* Chopin's ``particles`` (0.4): its ``SMC`` on the ``Bootstrap`` Feynman-Kac
  model of a ``StateSpaceModel`` written for this model;
* a plain NumPy loop over time, vectorised over particles.

Each is timed at P = 1,000 and P = 100,000 particles in turn, round after
round (``lecture_utils.timing.time_interleaved``), so that a change in the
machine's load falls on all of them. The figure of merit is particle-steps
per second, P T over the wall time of one filter. Before timing, the three
log-likelihood estimates are checked to agree in distribution (their means
over independent runs within Monte Carlo error) at P = 1,000.

The lecture that uses these filters (lectures/nonlinear_filtering.md) must
execute in under 3 minutes with an empty compilation cache; the full run
also times that, as the tests run it (jupytext, then pytest --nbval-lax),
in a child process with an empty JAX_COMPILATION_CACHE_DIR, and records its
wall and CPU time.
"""

import importlib.metadata
import json
import math
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import lecture_utils  # noqa: E402,F401  (float64, XLA settings)
from lecture_utils.timing import Stopwatch, time_interleaved  # noqa: E402
from common import RESULTS  # noqa: E402

GAMMA = (0.2, 0.2)  # (gamma_eps, gamma_eta): Stock and Watson's value
SIZES = (1_000, 100_000)
ESS_MIN = 0.5  # resample when ESS < ESS_MIN * P (particles' default)
LOG_2PI = math.log(2 * math.pi)
REPEATS = 7  # interleaved rounds (time_interleaved)
AGREEMENT_RUNS = 40  # independent runs per implementation for the agreement check


def load_data():
    from lecture_utils.ucsv import load_inflation

    dates, y = load_inflation()
    return dates, y


# ----- ours --------------------------------------------------------------------------


def ours(params, y, P, *, with_noise=True):
    """Our filter as ``(jitted, args)``: ``jitted(*args)`` is one log-likelihood estimate.

    ``with_noise=True``: one jitted program draws the filter's normals
    (``ucsv.draw_noise``, threefry in float64) and runs the filter, as the
    peers do; ``with_noise=False``: the filter on normals drawn beforehand.
    """
    from lecture_utils import ucsv

    T = y.shape[0]
    if with_noise:
        def run(key):
            noise = ucsv.draw_noise(key, T, P, rao_blackwellised=False)
            return ucsv.filter_bootstrap(params, y, noise, history=False).loglik
        return run, (jax.random.key(0),)

    def run(noise):
        return ucsv.filter_bootstrap(params, y, noise, history=False).loglik
    return run, (ucsv.draw_noise(jax.random.key(0), T, P, rao_blackwellised=False),)


# ----- a plain NumPy loop ----------------------------------------------------------------


def numpy_filter(params, y, P, rng):
    """The same bootstrap filter as a NumPy loop over time, vectorised over particles.

    State (tau, h_eps, h_eta) as in ``lecture_utils.ucsv``: draw x_0 from the
    initial law; at each t, resample systematically if ESS < ESS_MIN * P
    (not at t = 0), move, weight by N(y_t; tau, exp(h_eps)). Returns the log
    of the likelihood estimate.
    """
    g_eps, g_eta = float(params.gamma_eps), float(params.gamma_eta)
    tau = params.tau0_mean + params.tau0_sd * rng.standard_normal(P)
    h_eps = params.h0_mean + params.h0_sd * rng.standard_normal(P)
    h_eta = params.h0_mean + params.h0_sd * rng.standard_normal(P)
    log_w = np.full(P, -math.log(P))
    loglik = 0.0
    for t in range(y.shape[0]):
        if t > 0:
            w = np.exp(log_w)
            if 1.0 / np.sum(w**2) < ESS_MIN * P:
                cdf = np.cumsum(w)
                a = np.searchsorted(cdf, (rng.uniform() + np.arange(P)) / P, side="right")
                a = np.minimum(a, P - 1)
                tau, h_eps, h_eta = tau[a], h_eps[a], h_eta[a]
                log_w = np.full(P, -math.log(P))
        z = rng.standard_normal((3, P))
        h_eps = h_eps + g_eps * z[0]
        h_eta = h_eta + g_eta * z[1]
        tau = tau + np.exp(0.5 * h_eta) * z[2]
        log_g = -0.5 * (LOG_2PI + h_eps + (y[t, 0] - tau) ** 2 * np.exp(-h_eps))
        log_w = log_w + log_g
        top = log_w.max()
        increment = top + math.log(np.sum(np.exp(log_w - top)))
        loglik += increment
        log_w -= increment
    return loglik


# ----- Chopin's particles ----------------------------------------------------------------


def particles_model(params):
    """The UC-SV model as a ``particles`` StateSpaceModel.

    ``particles`` observes its initial state (Y_0 given X_0); the book's
    filter moves x_0 once before the first observation, so PX0 here is the
    law of x_1: x_0 from the initial law, moved once.
    """
    from particles import distributions as dists
    from particles import state_space_models as ssms

    g_eps, g_eta = float(params.gamma_eps), float(params.gamma_eta)

    class Move(dists.ProbDist):
        """x_t given x_{t-1} (rows of (P, 3) arrays): vols first, then the trend."""

        dim = 3

        def __init__(self, xp):
            self.xp = xp

        def rvs(self, size=None):
            z = np.random.standard_normal((self.xp.shape[0], 3))
            x = np.empty_like(self.xp)
            x[:, 1] = self.xp[:, 1] + g_eps * z[:, 0]
            x[:, 2] = self.xp[:, 2] + g_eta * z[:, 1]
            x[:, 0] = self.xp[:, 0] + np.exp(0.5 * x[:, 2]) * z[:, 2]
            return x

    class First(dists.ProbDist):
        dim = 3

        def rvs(self, size=None):
            z = np.random.standard_normal((size, 3))
            loc = [params.tau0_mean, params.h0_mean, params.h0_mean]
            scale = [params.tau0_sd, params.h0_sd, params.h0_sd]
            return Move(np.asarray(loc) + np.asarray(scale) * z).rvs()

    class UCSV(ssms.StateSpaceModel):
        def PX0(self):
            return First()

        def PX(self, t, xp):
            return Move(xp)

        def PY(self, t, xp, x):
            return dists.Normal(loc=x[:, 0], scale=np.exp(0.5 * x[:, 1]))

    return UCSV()


def particles_filter(model, y, P):
    """One run of ``particles``' bootstrap SMC: its log-likelihood estimate ``logLt``."""
    import particles
    from particles import state_space_models as ssms

    fk = ssms.Bootstrap(ssm=model, data=y[:, 0])
    pf = particles.SMC(fk=fk, N=P, resampling="systematic", ESSrmin=ESS_MIN, collect=None)
    pf.run()
    return pf.logLt


# ----- the run ------------------------------------------------------------------------------


def agreement(params, y, P, runs):
    """Log-likelihood estimates of ``runs`` independent runs of each implementation at P."""
    from lecture_utils import ucsv

    T = y.shape[0]
    keys = jax.random.split(jax.random.key(2024), runs)
    one = jax.jit(jax.vmap(lambda k: ucsv.filter_bootstrap(
        params, y, ucsv.draw_noise(k, T, P, rao_blackwellised=False), history=False).loglik))
    rng = np.random.default_rng(2024)
    np.random.seed(2024)  # particles draws from NumPy's global generator
    model = particles_model(params)
    return {"ours": np.asarray(one(keys)),
            "particles": np.array([particles_filter(model, y, P) for _ in range(runs)]),
            "numpy": np.array([numpy_filter(params, y, P, rng) for _ in range(runs)])}


def check_agreement(estimates):
    """Every pair's means within 4 standard errors, standard deviations within a factor 2."""
    names = list(estimates)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            x, z = estimates[a], estimates[b]
            se = math.sqrt(x.var(ddof=1) / x.size + z.var(ddof=1) / z.size)
            assert abs(x.mean() - z.mean()) < 4 * se, (a, b, x.mean(), z.mean(), se)
            assert 0.5 < x.std() / z.std() < 2, (a, b, x.std(), z.std())


def time_one_size(params, y, P, repeat):
    """Seconds per filter of each implementation at P, interleaved; and our compile times."""
    from lecture_utils.timing import compile_jitted

    T = y.shape[0]
    compiled, compile_s = {}, {}
    for name, with_noise in (("ours", True), ("ours, noise given", False)):
        fn, args = ours(params, y, P, with_noise=with_noise)
        exe, watch = compile_jitted(fn, *args)
        compiled[name] = (exe, args)
        compile_s[name] = watch.wall_s
    model = particles_model(params)
    rng = np.random.default_rng(P)
    calls = {
        "ours": lambda: jax.block_until_ready(compiled["ours"][0](*compiled["ours"][1])),
        "ours, noise given": lambda: jax.block_until_ready(
            compiled["ours, noise given"][0](*compiled["ours, noise given"][1])),
        "particles": lambda: particles_filter(model, y, P),
        "numpy": lambda: numpy_filter(params, y, P, rng),
    }
    times = time_interleaved(calls, repeat=repeat, min_sample_s=0.02)
    return [dict(P=P, T=T, implementation=name, wall_s=wall, cpu_s=cpu,
                 particle_steps_per_s=P * T / wall,
                 compile_s=compile_s.get(name, float("nan")))
            for name, (wall, cpu) in times.items()]


def lecture_cold_run():
    """Wall and CPU seconds (children) of the lecture under nbval, empty compilation cache."""
    import resource
    import subprocess
    import tempfile

    lecture = ROOT / "lectures" / "nonlinear_filtering.md"
    with tempfile.TemporaryDirectory() as folder, tempfile.TemporaryDirectory() as cache:
        notebook = Path(folder) / "nonlinear_filtering.ipynb"
        bin_dir = Path(sys.executable).parent
        subprocess.run([str(bin_dir / "jupytext"), "-q", "--to", "ipynb", "-o", str(notebook),
                        str(lecture)], check=True)
        env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache, MPLBACKEND="Agg")
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        with Stopwatch() as watch:
            run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                  "--nbval-lax", "--nbval-current-env",
                                  "--nbval-cell-timeout=900", folder],
                                 env=env, capture_output=True, text=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return dict(wall_s=watch.wall_s, cpu_s=cpu, passed=run.returncode == 0,
                load_average=os.getloadavg()[0],
                summary=(run.stdout.strip().splitlines() or [""])[-1])


def main(quick=False):
    from lecture_utils.ucsv import UCSVParams

    params = UCSVParams(gamma_eps=GAMMA[0], gamma_eta=GAMMA[1])
    _, y = load_data()
    load_start = os.getloadavg()[0]
    with Stopwatch() as whole:
        estimates = agreement(params, y, 1_000, 10 if quick else AGREEMENT_RUNS)
        check_agreement(estimates)
        rows = []
        for P in ((1_000, 10_000) if quick else SIZES):
            rows += time_one_size(params, y, P, 3 if quick else REPEATS)
            for r in rows[-4:]:
                print({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in r.items()},
                      flush=True)
    by = {(r["P"], r["implementation"]): r for r in rows}
    for r in rows:
        r["speedup_vs_particles"] = by[r["P"], "particles"]["wall_s"] / r["wall_s"]
        r["speedup_vs_numpy"] = by[r["P"], "numpy"]["wall_s"] / r["wall_s"]
    result = dict(
        date=date.today().isoformat(), machine=platform.machine(),
        processor=platform.processor(), cores=os.cpu_count(),
        load_average_start=load_start, load_average_end=os.getloadavg()[0],
        seconds=whole.wall_s, quick=quick, jax=jax.__version__,
        particles=importlib.metadata.version("particles"), numpy=np.__version__,
        xla_flags=os.environ.get("XLA_FLAGS", ""), gamma=GAMMA, T=int(y.shape[0]),
        ess_threshold=ESS_MIN, repeats=3 if quick else REPEATS,
        agreement={name: dict(mean=float(v.mean()), sd=float(v.std(ddof=1)), runs=int(v.size))
                   for name, v in estimates.items()},
        rows=rows, lecture=None if quick else lecture_cold_run())
    if not quick:  # a quick run checks that the script works; it records nothing
        (RESULTS / "particles.json").write_text(json.dumps(result, indent=1) + "\n")
        (RESULTS / "particles.md").write_text(report(result))
    print(report(result))


def report(result):
    """The Markdown page of a result."""
    rows = result["rows"]
    lines = [
        "# Bootstrap particle filter on UC-SV: ours against particles and a NumPy loop",
        "",
        f"Run {result['date']} on {result['machine']} ({result['processor'] or 'CPU'}), "
        f"{result['cores']} cores shared with other jobs (load average {result['load_average_start']:.1f} "
        f"at the start, {result['load_average_end']:.1f} at the end: absolute times are "
        "inflated, compare rows of one run); jax "
        f"{result['jax']}, particles {result['particles']}, NumPy {result['numpy']}; "
        f"XLA_FLAGS={result['xla_flags']!r}. Whole run {result['seconds']:.0f} s.",
        "",
        f"Stock and Watson's (2007) UC-SV model on US CPI inflation (statsmodels' macrodata "
        f"`infl`, 1959Q2-2009Q3, T = {result['T']}), gamma = {tuple(result['gamma'])}, "
        "initial law of `lecture_utils.ucsv.UCSVParams`. The same algorithm in all three: "
        "move from the transition, weight by the observation density, systematic "
        f"resampling when the ESS falls below {result['ess_threshold']} P. "
        "`ours`: `ucsv.filter_bootstrap` (jitted `lax.scan`), drawing its normals in "
        "the same compiled program (`ucsv.draw_noise`, float64); `ours, noise given`: "
        "the filter alone on normals drawn beforehand (the peers draw theirs as they go, "
        "so the first row is the like-for-like one). `particles`: Chopin's library, "
        "`SMC(Bootstrap(...), resampling='systematic', ESSrmin=0.5)` on a "
        "`StateSpaceModel` of the same model. `numpy`: a loop over time, vectorised over "
        "particles. Median wall time per filter over "
        f"{result['repeats']} interleaved rounds (`lecture_utils.timing.time_interleaved`); "
        "our compile time apart (JAX caches cleared, persistent cache bypassed).",
        "",
        "| P | implementation | seconds per filter | CPU seconds | particle-steps per second "
        "| x particles | x NumPy | compile |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        compile_s = "" if math.isnan(r["compile_s"]) else f"{r['compile_s']:.1f} s"
        lines.append(
            f"| {r['P']:,} | {r['implementation']} | {r['wall_s']:.4f} | {r['cpu_s']:.4f} | "
            f"{r['particle_steps_per_s'] / 1e6:.2f} M | {r['speedup_vs_particles']:.2f} | "
            f"{r['speedup_vs_numpy']:.2f} | {compile_s} |")
    agree = result["agreement"]
    lines += [
        "",
        "Agreement, checked before timing: log-likelihood estimates at P = 1,000 over "
        "independent runs (mean, standard deviation): "
        + "; ".join(f"{name} {v['mean']:.3f} ({v['sd']:.3f}, {v['runs']} runs)"
                    for name, v in agree.items())
        + ". Every pair's means are within 4 standard errors and their standard deviations "
        "within a factor 2.",
        "",
    ]
    lecture = result.get("lecture")
    if lecture:
        lines += [
            "Lecture 6 (`lectures/nonlinear_filtering.md`), executed as the tests do "
            "(jupytext, `pytest --nbval-lax`) with an empty JAX_COMPILATION_CACHE_DIR: "
            f"{lecture['wall_s']:.0f} s wall, {lecture['cpu_s']:.0f} s CPU, load average "
            f"{lecture['load_average']:.1f} at the end ({'passed' if lecture['passed'] else 'FAILED'}: "
            f"{lecture['summary']}). Target: under 180 s wall on 2 cores.",
            "",
        ]
    return "\n".join(lines)


def lecture_only():
    """Time the lecture's cold run and add it to the committed result."""
    result = json.loads((RESULTS / "particles.json").read_text())
    result["lecture"] = lecture_cold_run()
    (RESULTS / "particles.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / "particles.md").write_text(report(result))
    print(report(result))


if __name__ == "__main__":
    if "--lecture" in sys.argv[1:]:
        lecture_only()
    else:
        main(quick="--quick" in sys.argv[1:])
