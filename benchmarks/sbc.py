"""Simulation-based calibration (Talts et al. 2018) of the book's NUTS setup.

For each replication: draw parameters from the prior, simulate data from the
model, sample the posterior with ``lecture_utils.sampling.nuts_chain`` (the
sampler of lectures/bayesian_estimation.md; ``run_nuts`` vmaps it), and record
the rank of the true parameter among L thinned posterior draws. If the sampler draws from the
posterior, every rank is uniform on {0, ..., L}; a chi-square test on binned
ranks checks that. Replications run in chunks, each chunk under one ``vmap``.

A negative control runs the same calibration with a wrong log density (the
log-Jacobian of the change of variables left out) and must be rejected:
otherwise the test would have no power.

Model (small, so that hundreds of posteriors are affordable): AR(1) plus noise,
``x_{t+1} = rho x_t + s_w w``, ``y[t] = x_{t+1} + s_v v``, x_0 stationary,
T = 50. Priors: rho ~ U(-1, 1); s_w, s_v ~ LogNormal(log 0.5, 0.5).

Run:  python benchmarks/sbc.py   (writes benchmarks/results/sbc.json; ~minutes)
tests/test_bayes.py asserts on the committed result and re-runs chunk 0 to
check that this code still reproduces it.
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
import lecture_utils  # noqa: E402,F401  (float64)
from lecture_utils.kalman import kalman_loglik  # noqa: E402
from lecture_utils.simulation import LSSModel  # noqa: E402
from lecture_utils.sampling import nuts_chain  # noqa: E402

from common import rank_uniformity_pvalues  # noqa: E402

T_OBS = 50
NUM_REPLICATIONS = 1000
CHUNK = 20
NUM_CONTROL_REPLICATIONS = 300
NUM_WARMUP = 200
THIN = 4
NUM_RANK_DRAWS = 99  # L: ranks take values 0..99
NUM_BINS = 10
SEED = 20260601
LOGNORMAL_MU, LOGNORMAL_SD = float(np.log(0.5)), 0.5
NAMES = ("rho", "sigma_w", "sigma_v")


def natural(theta):
    """(rho, s_w, s_v) from unconstrained (atanh rho, log s_w, log s_v)."""
    return jnp.tanh(theta[0]), jnp.exp(theta[1]), jnp.exp(theta[2])


def ar1_loglik(rho, s_w, s_v, y):
    model = LSSModel(rho[None, None], s_w[None, None], jnp.ones((1, 1)), s_v[None, None])
    var0 = s_w**2 / (1 - rho**2)
    return kalman_loglik(model, jnp.zeros(1), var0[None, None], y[:, None], jitter=0.0)


def log_prior_natural(rho, s_w, s_v):
    lognormal = jax.scipy.stats.norm.logpdf(jnp.log(jnp.stack([s_w, s_v])),
                                            LOGNORMAL_MU, LOGNORMAL_SD)
    return jnp.log(0.5) + jnp.sum(lognormal - jnp.log(jnp.stack([s_w, s_v])))


def log_posterior(theta, y, with_jacobian=True):
    rho, s_w, s_v = natural(theta)
    log_jac = jnp.log1p(-rho**2) + theta[1] + theta[2]
    return (log_prior_natural(rho, s_w, s_v) + jnp.where(with_jacobian, log_jac, 0.0)
            + ar1_loglik(rho, s_w, s_v, y))


def simulate(key):
    """Parameters from the prior and T_OBS observations; returns (theta, y)."""
    k_rho, k_s, k_x0, k_w, k_v = jax.random.split(key, 5)
    rho = jax.random.uniform(k_rho, minval=-1.0, maxval=1.0)
    s_w, s_v = jnp.exp(LOGNORMAL_MU + LOGNORMAL_SD * jax.random.normal(k_s, (2,)))
    w, v = jax.random.normal(k_w, (T_OBS,)), jax.random.normal(k_v, (T_OBS,))
    x0 = jax.random.normal(k_x0) * s_w / jnp.sqrt(1 - rho**2)

    def step(x, wv):
        x = rho * x + s_w * wv[0]
        return x, x + s_v * wv[1]

    _, y = jax.lax.scan(step, x0, jnp.stack([w, v], axis=1))
    return jnp.stack([jnp.arctanh(rho), jnp.log(s_w), jnp.log(s_v)]), y


def replication(key, with_jacobian):
    """Rank of each true parameter among NUM_RANK_DRAWS thinned posterior draws (1 chain)."""
    k_sim, k_nuts = jax.random.split(key)
    theta_true, y = simulate(k_sim)

    def logdensity(theta):
        return log_posterior(theta, y, with_jacobian)

    # run_nuts takes the log density as a static argument; here it is a
    # closure over traced data, so call its single-chain function directly.
    draws, steps, divergent, *_ = nuts_chain(
        logdensity, k_nuts, jnp.array([0.5, LOGNORMAL_MU, LOGNORMAL_MU]),
        num_warmup=NUM_WARMUP, num_samples=THIN * NUM_RANK_DRAWS, dense_mass=True)
    kept = draws[THIN - 1::THIN]
    ranks = jnp.sum(kept < theta_true, axis=0)  # monotone maps keep ranks
    return ranks, jnp.sum(divergent)


@functools.cache
def _chunk_fn(with_jacobian):
    return jax.jit(jax.vmap(lambda k: replication(k, with_jacobian)))


def run_chunk(chunk_index, with_jacobian=True):
    """Ranks (CHUNK, 3) and divergences (CHUNK,) of one chunk of replications."""
    keys = jax.random.split(jax.random.fold_in(jax.random.key(SEED), chunk_index), CHUNK)
    ranks, div = _chunk_fn(with_jacobian)(keys)
    return np.asarray(ranks), np.asarray(div)


def calibrate(with_jacobian, num_chunks):
    ranks, div = zip(*(run_chunk(c, with_jacobian) for c in range(num_chunks)))
    ranks, div = np.concatenate(ranks), np.concatenate(div)
    pvalues = rank_uniformity_pvalues(ranks, NUM_RANK_DRAWS, NUM_BINS)
    return {"ranks": ranks.tolist(), "divergences": int(div.sum()),
            "chi2_pvalues": dict(zip(NAMES, pvalues))}


def main():
    tic = time.perf_counter()
    result = {
        "what": "simulation-based calibration of lecture_utils.sampling.nuts_chain "
                "(what run_nuts vmaps) on AR(1)+noise, T=50",
        "replications": NUM_REPLICATIONS, "chunk": CHUNK, "seed": SEED,
        "num_warmup": NUM_WARMUP, "thin": THIN, "rank_draws": NUM_RANK_DRAWS,
        "bins": NUM_BINS, "parameters": list(NAMES),
        "correct": calibrate(True, NUM_REPLICATIONS // CHUNK),
        "control_replications": NUM_CONTROL_REPLICATIONS,
        "no_jacobian_control": calibrate(False, NUM_CONTROL_REPLICATIONS // CHUNK),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, "
                   f"jax {jax.__version__}, 2 shared cores",
        "date": date.today().isoformat(),
    }
    result["seconds"] = round(time.perf_counter() - tic, 1)
    out = Path(__file__).parent / "results" / "sbc.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("seconds",)}),
          result["correct"]["chi2_pvalues"], result["no_jacobian_control"]["chi2_pvalues"])


if __name__ == "__main__":
    main()
