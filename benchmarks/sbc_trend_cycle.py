"""Simulation-based calibration (Talts et al. 2018) of NUTS on lecture 4's own posterior.

benchmarks/sbc.py calibrates the sampler on a small AR(1)-plus-noise model.
This script calibrates it on the trend-cycle model of
lectures/bayesian_estimation.md itself: the same priors
(``trend_cycle.log_prior``: half-normal scales 1, 0.1, 1 for the level, slope
and cycle shocks, uniform partial autocorrelations), the same coordinates and
Jacobian (``trend_cycle.log_posterior``), the same sampler settings (dense
mass matrix, target acceptance 0.95), and series of the lecture's length,
T = 202 quarters. The half-normal prior of the slope shock puts much of its
mass near zero (a fifth below 0.025), so the replications include many
posteriors where the slope shock is near zero, the case where its likelihood
piles up at zero.

For each replication: draw the parameters and the initial state from the
prior (first quarter ``y_first = 0``), simulate T observations, run one NUTS
chain, and record the rank of each true coordinate of ``theta`` among
NUM_RANK_DRAWS thinned draws. If the sampler draws from the posterior, each
rank is uniform on {0, ..., L}; a chi-square test on binned ranks checks that.

Run:  python benchmarks/sbc_trend_cycle.py   (writes
benchmarks/results/sbc_trend_cycle.json after every chunk, so a run stopped
early leaves a valid result with fewer replications). tests/test_trend_cycle.py
asserts on the committed result and re-draws chunk 0's parameters.
"""

import functools
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import lecture_utils  # noqa: E402,F401  (float64, XLA settings)
from lecture_utils import trend_cycle as tc  # noqa: E402
from lecture_utils.sampling import nuts_chain  # noqa: E402
from lecture_utils.simulation import simulate_lss  # noqa: E402

from common import rank_uniformity_pvalues  # noqa: E402

T_OBS = 202
NUM_REPLICATIONS = 120
CHUNK = 8
NUM_WARMUP = 200
THIN = 2
NUM_RANK_DRAWS = 99  # L: ranks take values 0..99
NUM_BINS = 10
TARGET_ACCEPTANCE = 0.95
SEED = 20261130
NAMES = ("log_s", "log_sigma_slope", "u", "atanh_r1", "atanh_r2")
START = tc.unconstrain(tc.TrendCycleParams(*map(jnp.asarray, (0.6, 0.05, 0.6, 0.5, 0.0))))


def simulate(key):
    """Parameters from the prior and T_OBS observations: (theta (5,), y (T,))."""
    k_p, k_x0, k_w = jax.random.split(key, 3)
    p = tc.sample_prior(k_p)
    model = tc.trend_cycle_model(p)
    mu0, Sigma0 = tc.initial_moments(p, 0.0)
    x0 = jax.random.multivariate_normal(k_x0, mu0, Sigma0, method="eigh")
    w = jax.random.normal(k_w, (T_OBS, 3))
    x, y = simulate_lss(model, x0, w, jnp.zeros((T_OBS + 1, 1)))
    return tc.unconstrain(p), y[1:, 0]  # y[0] observes x_0: not data


def replication(key):
    """Ranks (5,) of the true theta among the thinned draws, and divergences."""
    k_sim, k_nuts = jax.random.split(key)
    theta_true, y = simulate(k_sim)
    draws, _, divergent, *_ = nuts_chain(
        lambda theta: tc.log_posterior(theta, 0.0, y), k_nuts, START,
        num_warmup=NUM_WARMUP, num_samples=THIN * NUM_RANK_DRAWS,
        target_acceptance_rate=TARGET_ACCEPTANCE)
    kept = draws[THIN - 1::THIN]
    return jnp.sum(kept < theta_true, axis=0), jnp.sum(divergent), theta_true


@functools.cache
def _chunk_fn():
    return jax.jit(jax.vmap(replication))


def run_chunk(chunk_index):
    """Ranks (CHUNK, 5), divergences (CHUNK,), true theta (CHUNK, 5) of one chunk."""
    keys = jax.random.split(jax.random.fold_in(jax.random.key(SEED), chunk_index), CHUNK)
    return tuple(np.asarray(a) for a in _chunk_fn()(keys))


def main(num_replications=NUM_REPLICATIONS):
    """Run the chunks in turn; after each, write what is done so far (a run
    stopped early leaves a valid result with fewer replications)."""
    tic = time.perf_counter()
    chunks = []
    for c in range(num_replications // CHUNK):
        chunks.append(run_chunk(c))
        ranks, div, theta = (np.concatenate(a) for a in zip(*chunks))
        _write(ranks, div, theta, time.perf_counter() - tic)
        print(f"chunk {c}: {time.perf_counter() - tic:.0f} s", flush=True)


def _write(ranks, div, theta, seconds):
    slope = np.exp(theta[:, 1])
    pvalues = rank_uniformity_pvalues(ranks, NUM_RANK_DRAWS, NUM_BINS)
    result = {
        "what": "simulation-based calibration of lecture_utils.sampling.nuts_chain on "
                "lecture 4's trend-cycle posterior (trend_cycle.log_posterior), T=202",
        "replications": len(ranks), "chunk": CHUNK, "seed": SEED,
        "num_warmup": NUM_WARMUP, "thin": THIN, "rank_draws": NUM_RANK_DRAWS,
        "bins": NUM_BINS, "target_acceptance": TARGET_ACCEPTANCE, "parameters": list(NAMES),
        "ranks": ranks.tolist(), "divergences": div.tolist(),
        "true_sigma_slope": slope.tolist(),
        "chi2_pvalues": dict(zip(NAMES, pvalues)),
        "replications_sigma_slope_below_0.025": int((slope < 0.025).sum()),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, "
                   f"jax {jax.__version__}, 2 cores shared with other jobs",
        "date": date.today().isoformat(),
        "seconds": round(seconds, 1),
    }
    out = Path(__file__).parent / "results" / "sbc_trend_cycle.json"
    out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
