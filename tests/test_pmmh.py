"""PMMH against an exact posterior: an AR(1) state observed with noise, whose
posterior for the autoregressive coefficient is computed on a dense grid with the
exact Kalman likelihood. The chains use a bootstrap filter with few particles and
correlated (Crank-Nicolson, sorted) moves."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lecture_utils.kalman import kalman_loglik
from lecture_utils.particle_filter import FilterNoise, bootstrap_filter
from lecture_utils.pmmh import PMMHResult, crank_nicolson, pmmh
from lecture_utils.sampling import summary, to_inference_data
from lecture_utils.simulation import LSSModel, lss_observation, lss_transition

T, P = 20, 64


def ar1(phi):
    return LSSModel(jnp.reshape(phi, (1, 1)), 0.5 * jnp.eye(1), jnp.eye(1), 0.5 * jnp.eye(1))


@pytest.fixture(scope="module")
def y():
    rng = np.random.default_rng(5)
    x, out = 0.0, np.empty((T, 1))
    for t in range(T):
        x = 0.7 * x + 0.5 * rng.normal()
        out[t] = x + 0.5 * rng.normal()
    return jnp.asarray(out)


def log_prior(theta):  # phi ~ uniform(-1, 1)
    return jnp.where(jnp.abs(theta[0]) < 1, jnp.log(0.5), -jnp.inf)


def noise_fn(key):
    k0, k1, k2 = jax.random.split(key, 3)
    return (jax.random.normal(k0, (P, 1)),
            FilterNoise(jax.random.normal(k1, (T, P, 1)), jax.random.normal(k2, (T,))))


def test_pmmh_matches_the_exact_posterior_on_a_grid(y):
    grid = np.linspace(-0.999, 0.999, 2001)
    ll = np.asarray(jax.vmap(lambda phi: kalman_loglik(ar1(phi), jnp.zeros(1), jnp.eye(1), y))(
        jnp.asarray(grid)))
    w = np.exp(ll - ll.max())
    w /= w.sum()
    mean = np.sum(w * grid)
    sd = np.sqrt(np.sum(w * (grid - mean) ** 2))

    def loglik(theta, u):
        model = ar1(theta[0])
        return bootstrap_filter(lss_transition, lss_observation, model.H, model, y, u[0], u[1],
                                order=lambda x: x[0]).loglik

    run = pmmh(loglik, log_prior, noise_fn, jax.random.key(0), jnp.array([[0.0], [0.5]] * 2),
               (2.0 * sd) ** 2 * jnp.eye(1), num_samples=2000, num_warmup=200, rho=0.9)
    assert isinstance(run, PMMHResult) and run.samples.shape == (4, 2000, 1)
    table = summary(run.samples, ["phi"])
    assert table.loc["phi", "r_hat"] < 1.05
    assert abs(table.loc["phi", "mean"] - mean) < 4 * table.loc["phi", "mcse_mean"], (
        table, mean)
    assert abs(table.loc["phi", "sd"] / sd - 1) < 0.15, (table, sd)
    assert np.all((run.acceptance_rate > 0.1) & (run.acceptance_rate < 0.9))
    # each kept draw carries the estimate it was accepted with, at its own theta
    idata = to_inference_data(run.samples, ["phi"], sample_stats={"accepted": run.accepted})
    assert idata.posterior["phi"].shape == (4, 2000)
    assert np.all(np.isfinite(run.loglik))


def test_crank_nicolson_keeps_the_standard_normal():
    rng = np.random.default_rng(0)
    u, e = rng.normal(size=200_000), rng.normal(size=200_000)
    v = np.asarray(crank_nicolson(u, e, 0.95))
    assert abs(v.std() - 1) < 0.01 and abs(np.corrcoef(u, v)[0, 1] - 0.95) < 0.01


def test_errors_name_the_argument():
    ok = dict(loglik_fn=lambda th, u: -th @ th, log_prior=lambda th: 0.0,
              noise_fn=lambda k: jax.random.normal(k, (2,)), key=jax.random.key(0),
              initial_positions=jnp.zeros((2, 1)), proposal_cov=jnp.eye(1))
    cases = [
        (dict(initial_positions=jnp.zeros(2)), {}, "initial_positions"),
        (dict(proposal_cov=jnp.eye(2)), {}, "proposal_cov must have shape"),
        (dict(proposal_cov=-jnp.eye(1)), {}, "positive definite"),
        ({}, dict(rho=1.0), "rho"),
        ({}, dict(num_samples=0), "num_samples"),
        (dict(loglik_fn=lambda th, u: u), {}, "loglik_fn must return a scalar"),
    ]
    for args, kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            pmmh(**(ok | args), **kwargs)
