"""Lecture 4's NUTS in two coordinate systems for the level and cycle shocks.

Ours (``lecture_utils.trend_cycle``): theta = (log s, log sigma_slope, u,
atanh r1, atanh r2), with s = hypot(sigma_level, sigma_cycle) and
sigma_cycle / sigma_level = tan(pi/2 sigmoid(u)). The alternative: the logs of
all three standard deviations, (log sigma_level, log sigma_slope,
log sigma_cycle, atanh r1, atanh r2). Same posterior (each with its own
log-Jacobian), data, priors, sampler (``lecture_utils.sampling.nuts_chain``: BlackJAX
NUTS, window adaptation, dense mass matrix, 500 warm-up steps, 1,000 draws),
16 chains under ``vmap`` started from the MLE plus a standard normal draw in
each system's coordinates, for two step-size targets and two seeds.

Reported per configuration: divergent transitions after warm-up (and how many
chains had any), the range of the adapted step sizes, gradient evaluations
(warm-up included), the smallest bulk ESS over the five natural parameters
(ArviZ) and that ESS per 1,000 gradients, and the largest R-hat.

Run:  python benchmarks/bench_coordinates.py   (~10 minutes on 2 cores)
Writes benchmarks/results/coordinates.md and coordinates.csv.
"""

import platform
import sys
import time
from datetime import date
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import lecture_utils  # noqa: E402,F401  (float64)
from lecture_utils import trend_cycle as tc  # noqa: E402
from lecture_utils.data import load_gdp  # noqa: E402
from lecture_utils.optim import lbfgs_minimize  # noqa: E402
from lecture_utils.sampling import nuts_chain  # noqa: E402
from common import RESULTS, ess_and_rhat, markdown_table, write_csv  # noqa: E402

NUM_CHAINS, NUM_WARMUP, NUM_SAMPLES = 16, 500, 1000
TARGETS = (0.8, 0.95)
SEEDS = (1, 2)

dates, gdp = load_gdp()
Y_FIRST, Y = float(gdp[0]), jnp.asarray(gdp[1:])


def constrain_logs(eta) -> tc.TrendCycleParams:
    """Natural parameters from (log sigma_level, log sigma_slope, log sigma_cycle, atanh r1, atanh r2)."""
    phi1, phi2 = tc.pacf_to_ar(jnp.tanh(eta[3]), jnp.tanh(eta[4]))
    return tc.TrendCycleParams(*jnp.exp(eta[:3]), phi1, phi2)


def log_posterior_logs(eta):
    r = jnp.tanh(eta[3:])
    log_jacobian = jnp.sum(eta[:3]) + jnp.sum(jnp.log1p(-r**2)) + jnp.log1p(-r[1])
    p = constrain_logs(eta)
    return tc.log_prior(p) + log_jacobian + tc.loglik(p, Y_FIRST, Y)


def log_posterior_ours(theta):
    return tc.log_posterior(theta, Y_FIRST, Y)


SYSTEMS = {  # name: (log density, natural parameters from coordinates)
    "ours: (log s, log sigma_slope, u, atanh r1, atanh r2)": (log_posterior_ours, tc.constrain),
    "logs: (log sigma_level, log sigma_slope, log sigma_cycle, atanh r1, atanh r2)":
        (log_posterior_logs, constrain_logs),
}


def mode(log_density, start):
    T = Y.shape[0]
    return lbfgs_minimize(lambda x: -log_density(x) / T, start, tol=1e-9).params


def run(log_density, to_natural, start, target, seed):
    chain = partial(nuts_chain, log_density, num_warmup=NUM_WARMUP,
                    num_samples=NUM_SAMPLES, target_acceptance_rate=target)
    k_start, k_chains = jax.random.split(jax.random.key(seed))
    starts = start + jax.random.normal(k_start, (NUM_CHAINS, 5))
    tic = time.perf_counter()
    draws, steps, divergent, warm_steps, step_size, _ = jax.block_until_ready(
        jax.jit(jax.vmap(chain))(jax.random.split(k_chains, NUM_CHAINS), starts))
    seconds = time.perf_counter() - tic
    ess, rhat = ess_and_rhat(draws, tc.PARAM_NAMES, transform=to_natural)
    grads = int(steps.sum() + warm_steps.sum())
    per_chain = np.asarray(divergent.sum(axis=1))
    return dict(target=target, seed=seed, divergences=int(per_chain.sum()),
                chains_with_divergences=int((per_chain > 0).sum()),
                step_size_min=round(float(step_size.min()), 3),
                step_size_max=round(float(step_size.max()), 3),
                grad_evals=grads, min_bulk_ess=round(ess),
                ess_per_1000_grads=round(1000 * ess / grads, 2),
                max_rhat=round(rhat, 3),
                seconds=round(seconds, 1))


def main():
    start_params = tc.TrendCycleParams(*map(jnp.asarray, (0.5, 0.1, 0.5, 1.2, -0.4)))
    rows = []
    for name, (log_density, to_natural) in SYSTEMS.items():
        # Each system's chains start around its own posterior mode.
        if to_natural is tc.constrain:
            start = mode(log_density, tc.unconstrain(start_params))
        else:
            r1, r2 = tc.ar_to_pacf(start_params.phi1, start_params.phi2)
            start = mode(log_density, jnp.stack([*jnp.log(jnp.stack(start_params[:3])),
                                                 jnp.arctanh(r1), jnp.arctanh(r2)]))
        for target in TARGETS:
            for seed in SEEDS:
                rows.append(dict(coordinates=name, **run(log_density, to_natural, start,
                                                         target, seed)))
                print(rows[-1], flush=True)

    write_csv("coordinates", rows)
    table = markdown_table(rows)
    (RESULTS / "coordinates.md").write_text(
        "# Lecture 4's NUTS in two coordinate systems\n\n"
        f"Date: {date.today().isoformat()}. Machine: {platform.machine()}, "
        f"jax {jax.__version__}; 2 shared cores (seconds include compilation).\n\n"
        "The same posterior of the trend-cycle model, sampled in the lecture's coordinates "
        "(the log of the combined size s of the level and cycle shocks and the logit u of "
        "their split) and in the logs of all three standard deviations. "
        f"{NUM_CHAINS} chains under vmap per row, {NUM_WARMUP} warm-up steps and "
        f"{NUM_SAMPLES} draws each, dense mass matrix; each system's chains start at its "
        "own posterior mode plus a standard normal draw. Divergences: after warm-up. "
        "ESS: the smallest bulk ESS over the five natural parameters.\n\n" + table)


if __name__ == "__main__":
    main()
