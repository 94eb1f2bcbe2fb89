"""Lecture 5's New Keynesian posterior: its gradient's cost, and NUTS, ours against a reader's.

Ours: ``lecture_utils.an_schorfheide.log_posterior`` (parameters -> structural
matrices -> ``solve_linear_re`` with implicit-function-theorem derivatives ->
Lyapunov initial covariance -> ``kalman_loglik`` with its hand-written
reverse rule), sampled by ``lecture_utils.sampling.run_nuts`` (BlackJAX NUTS,
chains under ``vmap``).

The peer is the posterior built the way a reader of QuantEcon would build it:
the same priors, change of variables and structural matrices, the solution by
autodiff through 60 unrolled fixed-point steps (``solve_by_iteration``, no
convergence check), the initial covariance by the Kronecker-product solve
``discrete_lyapunov`` (what a reader writes), dynamax's
``lgssm_filter`` differentiated by JAX through its scan, and determinacy by
the Taylor principle ``psi1 + (1 - beta) psi2 / kappa > 1`` (checked here
against the root count of the QZ reference at prior draws); sampled by
NumPyro's NUTS (``chain_method="vectorized"``, also ``vmap``).

1. Value and value + gradient of the whole log posterior at T = 80 (the
   lecture's data), both implementations, timed in turn (``time_interleaved``).
2. Compile of the value + gradient with an empty compilation cache, each in
   a fresh process (``JAX_COMPILATION_CACHE_DIR`` a new empty directory),
   NUM_COMPILE_CHILDREN times.
3. NUTS: both samplers from the same starting points (around the posterior
   mode), same chains, warm-up and draws, dense mass matrix; one run each to
   compile, then NUM_REPEATS runs each, taking turns. ESS per second: the
   smallest bulk ESS over the 13 natural parameters (ArviZ) over the run's
   wall time, compilation excluded (and, separately, included).

Run:  python benchmarks/bench_nk.py [--quick]
Writes benchmarks/results/nk.md, nk.csv and nk.json (the raw figures; --report rewrites
nk.md from them).
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import lecture_utils  # noqa: E402,F401  (float64, XLA settings)
from lecture_utils import an_schorfheide as nk  # noqa: E402
from lecture_utils.linear_re import discrete_lyapunov, solve_by_iteration  # noqa: E402
from lecture_utils.timing import Stopwatch, compile_jitted, time_interleaved  # noqa: E402
from common import RESULTS, ess_and_rhat, markdown_table, write_csv  # noqa: E402

NUM_CHAINS, NUM_WARMUP, NUM_SAMPLES = 4, 300, 300
TARGET_ACCEPTANCE = 0.8
NUM_REPEATS = 3
NUM_COMPILE_CHILDREN = 2
NUM_ITER = 60  # the reader's fixed-point steps
TARGETS = {"grad_ratio": 3.0, "grad_compile_s": 2.0, "ess_per_second_ratio": 5.0}

_, Y = nk.load_data()
Y = jnp.asarray(Y)


def log_posterior_ours(theta):
    return nk.log_posterior(theta, Y)


def taylor_principle(p):
    """Determinacy of this model in closed form: psi1 + (1 - beta) psi2 / kappa > 1."""
    beta = 1 / (1 + p.rA / 400)
    return p.psi1 + (1 - beta) * p.psi2 / p.kappa > 1


def loglik_reader(p):
    """dynamax's filter on the solution by 60 unrolled fixed-point steps."""
    from dynamax.linear_gaussian_ssm import lgssm_filter
    from dynamax.linear_gaussian_ssm.inference import (
        ParamsLGSSM, ParamsLGSSMDynamics, ParamsLGSSMEmissions, ParamsLGSSMInitial)

    P, Q = solve_by_iteration(*nk.structural_matrices(p), num_iter=NUM_ITER)
    A = jnp.zeros((6, 6)).at[:5, :5].set(P).at[5, 0].set(1.0)  # state (x_t, y_{t-1})
    C = jnp.zeros((6, 3)).at[:5].set(Q)
    W = C @ C.T
    G = jnp.array([[1.0, 0, 0, 0, 1, -1], [0, 4, 0, 0, 0, 0], [0, 0, 4, 0, 0, 0]])
    const = jnp.stack([p.gamma_q, p.pi_star, p.pi_star + p.rA + 4 * p.gamma_q])
    # dynamax observes its first state: the stationary one, as the book's x_1 is.
    params = ParamsLGSSM(
        initial=ParamsLGSSMInitial(mean=jnp.zeros(6), cov=discrete_lyapunov(A, W)),
        dynamics=ParamsLGSSMDynamics(weights=A, bias=jnp.zeros(6),
                                     input_weights=jnp.zeros((6, 0)), cov=W),
        emissions=ParamsLGSSMEmissions(weights=G, bias=const, input_weights=jnp.zeros((3, 0)),
                                       cov=jnp.zeros((3, 3))))
    return lgssm_filter(params, Y).marginal_loglik


def log_posterior_reader(theta):
    p = nk.constrain(theta)
    ll = jnp.where(taylor_principle(p), loglik_reader(p), -jnp.inf)
    return nk.log_prior(p) + nk.log_abs_det_jacobian(theta) + ll


def check_taylor_principle(num_draws=200):
    """The closed form agrees with the QZ root count at prior draws; returns the count checked."""
    from lecture_utils.linear_re_reference import count_roots

    draws = nk.sample_prior(jax.random.key(7), (num_draws,))
    for i in range(num_draws):
        p = nk.ASParams(*(float(v[i]) for v in draws))
        verdict = count_roots(*nk.structural_matrices(p)[:3]).verdict
        assert (verdict == "determinate") == bool(taylor_principle(p)), (p, verdict)
    return num_draws


def mode_and_starts():
    """The posterior mode (L-BFGS, exact gradients) and NUM_CHAINS starts around it."""
    from lecture_utils.optim import lbfgs_minimize

    start = nk.unconstrain(nk.ASParams(*map(jnp.asarray, (
        2.0, 0.5, 1.5, 0.5, 0.5, 7.0, 0.4, 0.5, 0.5, 0.5, 0.5, 1.0, 0.6))))
    fit = lbfgs_minimize(lambda th: -log_posterior_ours(th) / Y.shape[0], start, tol=1e-8)
    starts = fit.params + 0.1 * jax.random.normal(jax.random.key(1), (NUM_CHAINS, 13))
    return fit.params, starts


def to_natural(theta):
    return jnp.stack(list(nk.constrain(theta)))


# ----- 1. the cost of a gradient ---------------------------------------------------------

def gradient_cost(theta):
    """Median wall and CPU seconds of value and value + gradient, ours and the reader's."""
    calls = {}
    for name, f in (("ours value", log_posterior_ours),
                    ("ours value + gradient", jax.value_and_grad(log_posterior_ours)),
                    ("reader value", log_posterior_reader),
                    ("reader value + gradient", jax.value_and_grad(log_posterior_reader))):
        compiled, _ = compile_jitted(f, theta)
        calls[name] = lambda c=compiled: jax.block_until_ready(c(theta))
    return time_interleaved(calls, repeat=15)


def compile_child():
    """In a fresh process with an empty cache: compile the value, then value + gradient."""
    theta = nk.unconstrain(nk.ASParams(*map(jnp.asarray, (
        2.0, 0.5, 1.5, 0.5, 0.5, 7.0, 0.4, 0.5, 0.5, 0.5, 0.5, 1.0, 0.6))))
    jax.block_until_ready(jnp.zeros(1) + 1)  # start the backend outside the stopwatch
    out = {}
    for name, f in (("value", log_posterior_ours),
                    ("value + gradient", jax.value_and_grad(log_posterior_ours))):
        jax.clear_caches()
        with Stopwatch() as watch:
            jax.jit(f).lower(theta).compile()
        out[name] = (watch.wall_s, watch.cpu_s)
    print(json.dumps(out))


def cold_compiles():
    """NUM_COMPILE_CHILDREN fresh processes, each with a new empty cache directory."""
    runs = []
    for _ in range(NUM_COMPILE_CHILDREN):
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache)
            out = subprocess.run([sys.executable, __file__, "--compile-child"], env=env,
                                 stdout=subprocess.PIPE, text=True, check=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print("cold compile:", runs[-1], flush=True)
    return runs


# ----- 3. NUTS ---------------------------------------------------------------------------

def ours(starts):
    run = partial(run_nuts_ours, num_warmup=NUM_WARMUP, num_samples=NUM_SAMPLES)

    def once(seed):
        with Stopwatch() as watch:
            out = jax.block_until_ready(run(jax.random.key(seed), starts))
        return dict(draws=np.asarray(out.samples), grads=int(out.grad_evals),
                    seconds=watch.wall_s, cpu_seconds=watch.cpu_s,
                    divergences=int(out.divergences.sum()))

    return once


def run_nuts_ours(key, starts, num_warmup, num_samples):
    from lecture_utils.sampling import run_nuts

    return run_nuts(log_posterior_ours, key, starts, num_warmup=num_warmup,
                    num_samples=num_samples, dense_mass=True,
                    target_acceptance_rate=TARGET_ACCEPTANCE)


def numpyro_reader(starts):
    from numpyro.infer import MCMC, NUTS

    kernel = NUTS(potential_fn=lambda th: -log_posterior_reader(th), dense_mass=True,
                  target_accept_prob=TARGET_ACCEPTANCE)
    mcmc = MCMC(kernel, num_warmup=NUM_WARMUP, num_samples=NUM_SAMPLES,
                num_chains=NUM_CHAINS, chain_method="vectorized", progress_bar=False)

    def once(seed):
        with Stopwatch() as watch:
            mcmc.warmup(jax.random.key(seed), init_params=starts, collect_warmup=True,
                        extra_fields=("num_steps",))
            warm = int(np.sum(mcmc.get_extra_fields(group_by_chain=True)["num_steps"]))
            mcmc.run(mcmc.post_warmup_state.rng_key, extra_fields=("num_steps", "diverging"))
            draws = jax.block_until_ready(mcmc.get_samples(group_by_chain=True))
        extra = mcmc.get_extra_fields(group_by_chain=True)
        return dict(draws=np.asarray(draws), seconds=watch.wall_s, cpu_seconds=watch.cpu_s,
                    grads=warm + int(np.sum(extra["num_steps"])),
                    divergences=int(np.sum(extra["diverging"])))

    return once


def nuts_comparison(starts, repeats):
    import dynamax
    import numpyro

    from lecture_utils.compile_cache import persistent_cache_bypassed

    samplers = {"ours: BlackJAX NUTS + solve_linear_re + kalman_loglik": ours,
                f"NumPyro {numpyro.__version__} NUTS + {NUM_ITER} unrolled steps + dynamax "
                f"{dynamax.__version__}": numpyro_reader}
    runs, first = {}, {}
    for name, make in samplers.items():
        with persistent_cache_bypassed(), Stopwatch() as watch:
            runs[name] = make(starts)
            r = runs[name](0)
        first[name] = dict(seconds=watch.wall_s, cpu_seconds=watch.cpu_s,
                           ess=ess_and_rhat(r["draws"], nk.PARAM_NAMES, transform=to_natural)[0])
        print(name, "first run (compiles):", round(watch.wall_s, 1), "s", flush=True)
    results = {name: [] for name in samplers}
    for seed in range(1, repeats + 1):
        for name in samplers:
            r = runs[name](seed)
            ess, rhat = ess_and_rhat(r["draws"], nk.PARAM_NAMES, transform=to_natural)
            results[name].append(dict(r, ess=ess, rhat=rhat))
            print(name, seed, {k: round(v, 3) for k, v in results[name][-1].items()
                               if k != "draws"}, flush=True)
    rows = []
    for name, rs in results.items():
        seconds = sum(r["seconds"] for r in rs)
        ess = sum(r["ess"] for r in rs)
        grads = sum(r["grads"] for r in rs)
        rows.append(dict(
            sampler=name, runs=len(rs), seconds_per_run=round(seconds / len(rs), 1),
            cpu_seconds_per_run=round(sum(r["cpu_seconds"] for r in rs) / len(rs), 1),
            first_run_seconds=round(first[name]["seconds"], 1),
            grad_evals_per_run=round(grads / len(rs)), grads_per_second=round(grads / seconds),
            min_bulk_ess_per_run=round(ess / len(rs)),
            max_rhat=round(max(r["rhat"] for r in rs), 3),
            ess_per_second=round(ess / seconds, 2),
            ess_per_second_with_compile=round(
                (ess + first[name]["ess"]) / (seconds + first[name]["seconds"]), 2),
            divergences=sum(r["divergences"] for r in rs)))
        print(rows[-1], flush=True)
    per_run = [a["ess"] / a["seconds"] / (b["ess"] / b["seconds"])
               for a, b in zip(*results.values())]
    return rows, per_run


# ----- report ----------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compile-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--report", action="store_true",
                        help="rewrite results/nk.md from results/nk.json (no timing)")
    parser.add_argument("--quick", action="store_true",
                        help="short NUTS runs, one repeat (a smoke test; nothing written)")
    args = parser.parse_args()
    if args.compile_child:
        return compile_child()
    if args.report:
        return report(json.loads((RESULTS / "nk.json").read_text()))

    import nk_reference

    checked = check_taylor_principle()
    mode, starts = mode_and_starts()
    reference = nk_reference.log_prior(np.asarray(to_natural(mode))) + nk_reference.loglik(
        np.asarray(to_natural(mode)), np.asarray(Y), method="numpy", jitter=1e-8) \
        + nk_reference.log_jacobian(nk_reference.to_unconstrained(np.asarray(to_natural(mode))))
    ours_at_mode = float(log_posterior_ours(mode))
    reader_at_mode = float(log_posterior_reader(mode))
    np.testing.assert_allclose(ours_at_mode, reference, rtol=1e-9)
    # gradients away from the mode (where ours nearly vanishes): at the first start
    g_ours = jax.grad(log_posterior_ours)(starts[0])
    g_reader = jax.grad(log_posterior_reader)(starts[0])
    grad_gap = float(jnp.max(jnp.abs(g_ours - g_reader)) / jnp.max(jnp.abs(g_ours)))
    print(f"at the mode: ours {ours_at_mode:.10f}, NumPy reference {reference:.10f}, "
          f"reader {reader_at_mode:.10f}; gradient gap {grad_gap:.1e}", flush=True)

    cost = gradient_cost(mode)
    print({k: (round(v[0] * 1e6, 1), round(v[1] * 1e6, 1)) for k, v in cost.items()}, flush=True)
    compiles = cold_compiles()

    global NUM_WARMUP, NUM_SAMPLES
    if args.quick:
        NUM_WARMUP, NUM_SAMPLES = 50, 50
    rows, per_run = nuts_comparison(starts, 1 if args.quick else NUM_REPEATS)
    if args.quick:
        return
    raw = dict(date=date.today().isoformat(), load=os.getloadavg()[0], checked=checked,
               ours_at_mode=ours_at_mode, reader_at_mode=reader_at_mode, grad_gap=grad_gap,
               cost=cost, compiles=compiles, rows=rows, per_run=per_run,
               settings=dict(chains=NUM_CHAINS, warmup=NUM_WARMUP, draws=NUM_SAMPLES,
                             repeats=NUM_REPEATS, target_acceptance=TARGET_ACCEPTANCE))
    (RESULTS / "nk.json").write_text(json.dumps(raw, indent=1) + "\n")
    write_csv("nk", rows)
    report(raw)


def report(raw):
    """Write results/nk.md from the raw figures of a run (results/nk.json)."""
    cost, compiles, rows, per_run = raw["cost"], raw["compiles"], raw["rows"], raw["per_run"]
    settings = raw["settings"]

    def best(pair):  # the smaller of wall and CPU time: wall grows with others' load
        return min(pair)

    grad_ratio = best(cost["ours value + gradient"]) / best(cost["ours value"])
    reader_ratio = best(cost["reader value + gradient"]) / best(cost["reader value"])
    speedup = best(cost["reader value + gradient"]) / best(cost["ours value + gradient"])
    vg_compiles = [best(c["value + gradient"]) for c in compiles]
    v_compiles = [best(c["value"]) for c in compiles]
    ess_ratio = rows[0]["ess_per_second"] / rows[1]["ess_per_second"]
    ess_ratio_compile = (rows[0]["ess_per_second_with_compile"]
                         / rows[1]["ess_per_second_with_compile"])
    ess_ratio_cpu = ((rows[0]["min_bulk_ess_per_run"] / rows[0]["cpu_seconds_per_run"])
                     / (rows[1]["min_bulk_ess_per_run"] / rows[1]["cpu_seconds_per_run"]))
    cost_rows = [dict(call=k, wall_us=round(v[0] * 1e6, 1), cpu_us=round(v[1] * 1e6, 1))
                 for k, v in cost.items()]
    met = {True: "met", False: "missed"}
    verdicts = [
        f"- value + gradient at most {TARGETS['grad_ratio']:g} times the value alone: "
        f"**{grad_ratio:.2f}x**, {met[grad_ratio <= TARGETS['grad_ratio']]} (the reader's: "
        f"{reader_ratio:.2f}x; ours is {speedup:.1f}x faster than the reader's value + "
        "gradient).",
        f"- value + gradient compiles in under {TARGETS['grad_compile_s']:g} s with an empty "
        f"cache in a fresh process: **{min(vg_compiles):.2f} s** at best over "
        f"{len(vg_compiles)} processes (median {statistics.median(vg_compiles):.2f} s; "
        f"the value alone {min(v_compiles):.2f} s), "
        f"{met[min(vg_compiles) < TARGETS['grad_compile_s']]}.",
        f"- NUTS ESS per second at least {TARGETS['ess_per_second_ratio']:g} times "
        f"NumPyro's on the reader's posterior: **{ess_ratio:.2f}x** compilation excluded "
        f"in wall time (per run: {', '.join(f'{x:.2f}x' for x in per_run)}), "
        f"**{ess_ratio_cpu:.2f}x** in CPU time (this process, all threads: less sensitive "
        f"to the other jobs' load); {ess_ratio_compile:.2f}x in wall time with each "
        "sampler's first run, compilation included, counted in; "
        f"{met[min(ess_ratio, ess_ratio_cpu) >= TARGETS['ess_per_second_ratio']]}.",
    ]
    text = (
        "# The New Keynesian posterior: its gradient and NUTS, ours against a reader's\n\n"
        f"Date: {raw['date']}. Machine: {platform.machine()} "
        f"({platform.processor() or 'CPU'}), jax {jax.__version__}; 2 cores shared with "
        "other jobs (load during the run: "
        f"{raw['load']:.1f}), so wall times vary from run to run; times below are the "
        "smaller of wall and CPU time where both are given.\n\n"
        "Lecture 5's log posterior of the 13 parameters of the An-Schorfheide model at "
        "T = 80 (statsmodels macrodata 1983Q1-2002Q4), at its mode. Ours: "
        "`an_schorfheide.log_posterior` (solve_linear_re with implicit-function-theorem "
        "derivatives, Lyapunov initial covariance, kalman_loglik with its reverse rule). "
        f"The reader's: {NUM_ITER} unrolled fixed-point steps (`solve_by_iteration`), the "
        "Kronecker Lyapunov solve, dynamax's `lgssm_filter`, the Taylor principle for "
        f"determinacy (agrees with the QZ root count at all {raw['checked']} prior draws "
        "checked). "
        f"At the mode, ours equals the NumPy/QZ reference to 1e-9 relative; the reader's "
        "log posterior differs from ours by "
        f"{abs(raw['reader_at_mode'] - raw['ours_at_mode']):.1e} and "
        f"its gradient, at the first chain's starting point, by {raw['grad_gap']:.1e} (largest "
        "entry, relative to ours' largest).\n\n"
        "## Targets\n\n" + "\n".join(verdicts) + "\n\n"
        "## Value and gradient at T = 80 (median of 15 interleaved rounds)\n\n"
        + markdown_table(cost_rows) +
        "\n## Compile of the value + gradient, empty cache, fresh process\n\n"
        + markdown_table([dict(process=i + 1,
                               value_wall_s=round(c["value"][0], 2),
                               value_cpu_s=round(c["value"][1], 2),
                               value_and_gradient_wall_s=round(c["value + gradient"][0], 2),
                               value_and_gradient_cpu_s=round(c["value + gradient"][1], 2))
                          for i, c in enumerate(compiles)]) +
        f"\n## NUTS: {settings['chains']} chains, {settings['warmup']} warm-up steps and "
        f"{settings['draws']} draws each, dense mass matrix, target acceptance "
        f"{settings['target_acceptance']}\n\n"
        "Same starting points (the mode plus N(0, 0.01) in unconstrained coordinates). "
        "Each sampler runs once to compile (first_run_seconds: compile and one run, "
        f"persistent cache bypassed), then {settings['repeats']} more time(s) with other "
        "seeds, the two taking turns. ESS: the smallest bulk ESS over the 13 natural parameters "
        "(ArviZ); ESS per second: total ESS over total wall seconds of the timed runs; "
        "ess_per_second_with_compile also counts the first run and its ESS.\n\n"
        + markdown_table(rows))
    (RESULTS / "nk.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
