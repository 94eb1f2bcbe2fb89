"""Tests of lecture_utils.sampling: NUTS on targets with known answers, and the ArviZ helpers.

The sampler is checked on correlated Gaussians, whose mean and covariance are
known: every entry of the draws' mean and second moments lies within Monte
Carlo error of the truth, the error estimated from the draws' effective sample
size (ESS). Its use on state-space posteriors (against an independent
random-walk Metropolis sampler, the large-sample normal approximation and
simulation-based calibration) is tested in test_bayes.py.
"""

import os
import subprocess
import sys
import warnings
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import lecture_utils  # noqa: F401  (float64)
from lecture_utils.sampling import NUTSRun, nuts_chain, run_nuts, summary, to_inference_data

with warnings.catch_warnings():  # ArviZ 0.23 announces its 1.0 refactor on import
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

NUM_CHAINS, NUM_WARMUP, NUM_SAMPLES = 4, 400, 1000

# A correlated 5-d Gaussian, standard deviations 0.05 to 1 along rotated axes
# (condition number 400): a dense mass matrix has to learn the rotation.
_Q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(5, 5)))
MEAN = np.array([1.0, -2.0, 0.5, 0.0, 3.0])
COV = _Q @ np.diag([0.05, 0.2, 0.4, 0.8, 1.0]) ** 2 @ _Q.T
PRECISION = jnp.asarray(np.linalg.inv(COV))


def gaussian_log_density(x):
    z = x - MEAN
    return -0.5 * z @ PRECISION @ z


# Independent coordinates on very different scales, for the diagonal mass matrix.
SCALES = np.array([0.01, 1.0, 30.0])


def scaled_log_density(x):
    return -0.5 * jnp.sum((x / SCALES) ** 2)


def starts(key, d, C=NUM_CHAINS):
    return jax.random.normal(key, (C, d))


@pytest.fixture(scope="module")
def dense_run():
    return run_nuts(gaussian_log_density, jax.random.key(1), MEAN + starts(jax.random.key(2), 5),
                    num_warmup=NUM_WARMUP, num_samples=NUM_SAMPLES)


def z_scores(values, truth):
    """(mean - truth) / MCSE per column of (C, S, k) ``values``; MCSE = sd / sqrt(bulk ESS)."""
    values = np.asarray(values)
    ess = np.array([az.ess(values[..., j], method="bulk") for j in range(values.shape[-1])])
    mcse = values.reshape(-1, values.shape[-1]).std(axis=0) / np.sqrt(ess)
    return (values.mean(axis=(0, 1)) - truth) / mcse, ess


# --- NUTS against known answers -------------------------------------------------------

def test_dense_nuts_recovers_mean_and_covariance_of_a_correlated_gaussian(dense_run):
    """Each of the 5 means and 15 second moments is within MC error of the truth
    (z-tests with ESS-based standard errors, family-wise level 0.001: Bonferroni
    over 20), and the MC error is small: every ESS above 1,000 of the 4,000 draws."""
    x = np.asarray(dense_run.samples)
    assert x.shape == (NUM_CHAINS, NUM_SAMPLES, 5)
    z_crit = scipy.stats.norm.ppf(1 - 0.001 / (2 * 20))
    z_mean, ess_mean = z_scores(x, MEAN)
    assert np.all(np.abs(z_mean) < z_crit), z_mean
    # Second moments about the known mean: E[(x_i - m_i)(x_j - m_j)] = COV[i, j].
    i, j = np.triu_indices(5)
    products = (x - MEAN)[..., i] * (x - MEAN)[..., j]
    z_cov, ess_cov = z_scores(products, COV[i, j])
    assert np.all(np.abs(z_cov) < z_crit), z_cov
    assert ess_mean.min() > 1000 and ess_cov.min() > 1000, (ess_mean, ess_cov)


def test_dense_adaptation_learns_the_covariance(dense_run):
    """The adapted inverse mass matrix is an estimate of the covariance: it whitens
    the target (the eigenvalues of M COV lie in (0.4, 2.5) where those of COV
    span a factor 400), and no transition diverges on a Gaussian."""
    imm = np.asarray(dense_run.inverse_mass_matrix)
    assert imm.shape == (NUM_CHAINS, 5, 5)
    for c in range(NUM_CHAINS):
        eig = np.linalg.eigvals(np.linalg.solve(imm[c], COV)).real
        assert 0.4 < eig.min() and eig.max() < 2.5, (c, eig)
    assert dense_run.divergences.shape == (NUM_CHAINS,) and int(dense_run.divergences.sum()) == 0
    assert dense_run.step_size.shape == (NUM_CHAINS,) and np.all(dense_run.step_size > 0)


def test_gradient_evaluation_counts_add_up(dense_run):
    steps = np.asarray(dense_run.steps)
    assert steps.shape == (NUM_CHAINS, NUM_SAMPLES) and steps.min() >= 1
    assert int(dense_run.grad_evals) == steps.sum() + int(dense_run.warmup_grad_evals)
    # every warm-up transition takes at least one leapfrog step
    assert int(dense_run.warmup_grad_evals) >= NUM_CHAINS * NUM_WARMUP


def test_run_nuts_is_nuts_chain_under_vmap_with_split_keys(dense_run):
    """The seed convention: chain c of run_nuts(key, ...) is nuts_chain with split(key, C)[c]
    (what lecture 4 runs under its own vmap), bit for bit."""
    positions = MEAN + starts(jax.random.key(2), 5)
    chain = partial(nuts_chain, gaussian_log_density, num_warmup=NUM_WARMUP,
                    num_samples=NUM_SAMPLES)
    draws, steps, divergent, warm, eps, imm = jax.jit(jax.vmap(chain))(
        jax.random.split(jax.random.key(1), NUM_CHAINS), positions)
    np.testing.assert_array_equal(draws, dense_run.samples)
    np.testing.assert_array_equal(steps, dense_run.steps)
    np.testing.assert_array_equal(eps, dense_run.step_size)
    np.testing.assert_array_equal(imm, dense_run.inverse_mass_matrix)
    assert int(warm.sum()) == int(dense_run.warmup_grad_evals)
    np.testing.assert_array_equal(divergent.sum(axis=1), dense_run.divergences)


def test_diagonal_mass_matrix_learns_the_scales():
    """Diagonal adaptation on independent coordinates with scales 0.01 to 30: the
    inverse mass matrix is (C, d) and close to the variances, and the draws'
    standard deviations match the scales."""
    run = run_nuts(scaled_log_density, jax.random.key(3), starts(jax.random.key(4), 3),
                   num_warmup=NUM_WARMUP, num_samples=NUM_SAMPLES, dense_mass=False)
    imm = np.asarray(run.inverse_mass_matrix)
    assert imm.shape == (NUM_CHAINS, 3)
    np.testing.assert_allclose(imm / SCALES**2, 1.0, rtol=0.5)
    x = np.asarray(run.samples)
    z_mean, _ = z_scores(x, np.zeros(3))
    z_var, ess = z_scores(x**2, SCALES**2)
    z_crit = scipy.stats.norm.ppf(1 - 0.001 / (2 * 6))
    assert np.all(np.abs(z_mean) < z_crit) and np.all(np.abs(z_var) < z_crit), (z_mean, z_var)
    assert ess.min() > 1000, ess


def test_initial_inverse_mass_matrix_is_where_the_adaptation_starts():
    """A Gaussian with standard deviations 0.02 and 1, correlation 0.9, and a short
    warm-up (60 steps): started from its covariance, the chains take fewer leapfrog
    steps per draw than from the identity (over three seeds), and sample it right."""
    sd = np.array([0.02, 1.0])
    cov = np.outer(sd, sd) * np.array([[1.0, 0.9], [0.9, 1.0]])
    precision = jnp.asarray(np.linalg.inv(cov))

    def steps_per_draw(inverse_mass):
        total = 0.0
        for seed in range(3):
            draws, steps, divergent, *_ = nuts_chain(
                lambda x: -0.5 * x @ precision @ x, jax.random.key(seed), jnp.zeros(2),
                num_warmup=60, num_samples=1000, initial_inverse_mass_matrix=inverse_mass)
            assert not bool(divergent.any())
            # 1000 draws with ESS in the hundreds: the sd within 10%
            np.testing.assert_allclose(np.std(np.asarray(draws), axis=0), sd, rtol=0.1)
            total += float(steps.mean())
        return total / 3

    assert steps_per_draw(jnp.asarray(cov)) < 0.9 * steps_per_draw(None)


# --- wrong arguments ------------------------------------------------------------------

def test_run_nuts_rejects_wrong_shape():
    with pytest.raises(ValueError, match="initial_positions"):
        run_nuts(gaussian_log_density, jax.random.key(0), jnp.zeros(5))


@pytest.mark.parametrize("kwargs, match", [
    (dict(position=jnp.zeros((2, 5))), r"position must have shape \(\?,\), got \(2, 5\)"),
    (dict(logdensity_fn=lambda x: -0.5 * x**2), r"logdensity_fn .* scalar, got \(5,\)"),
    (dict(num_samples=0), "num_samples"),
    (dict(num_warmup=-1), "num_warmup"),
    (dict(num_warmup=0), r"num_warmup must be >= 1, got 0"),
    (dict(initial_inverse_mass_matrix=jnp.eye(4)),
     r"initial_inverse_mass_matrix must have shape \(5, 5\), got \(4, 4\)"),
    (dict(initial_inverse_mass_matrix=jnp.eye(5), dense_mass=False),
     r"initial_inverse_mass_matrix must have shape \(5,\), got \(5, 5\)"),
])
def test_nuts_chain_names_the_wrong_argument(kwargs, match):
    args = dict(logdensity_fn=gaussian_log_density, key=jax.random.key(0),
                position=jnp.zeros(5), num_warmup=10, num_samples=10) | kwargs
    with pytest.raises(ValueError, match=match):
        nuts_chain(**args)


def test_conversion_names_the_wrong_argument():
    draws = np.zeros((2, 10, 3))
    with pytest.raises(ValueError, match=r"samples must have shape \(\?, \?, \?\), got \(10, 3\)"):
        to_inference_data(draws[0])
    with pytest.raises(ValueError, match="names must have one entry per variable: got 2"):
        to_inference_data(draws, ["a", "b"])
    with pytest.raises(ValueError, match=r"sample_stats\['diverging'\] must have shape \(2, 10\)"):
        to_inference_data(draws, sample_stats={"diverging": np.zeros((2, 9), bool)})
    with pytest.raises(ValueError, match="transform"):
        to_inference_data(draws, transform=lambda th: jnp.outer(th, th))
    with pytest.raises(ValueError, match=r"samples\['b'\] must have shape \(2, 10\)"):
        to_inference_data({"a": np.zeros((2, 10)), "b": np.zeros((2, 11))})
    with pytest.raises(ValueError, match="names and transform must be None"):
        to_inference_data({"a": np.zeros((2, 10))}, ["a"])


# --- the ArviZ conversion and summary -------------------------------------------------

class Natural(NamedTuple):
    mu: jax.Array
    sigma: jax.Array


def test_conversion_keeps_names_shapes_and_values(rng):
    theta = rng.normal(size=(3, 50, 2))  # (mu, log sigma)
    divergent = rng.uniform(size=(3, 50)) < 0.1

    plain = to_inference_data(theta, ["mu", "log_sigma"], sample_stats={"diverging": divergent})
    assert list(plain.posterior.data_vars) == ["mu", "log_sigma"]
    assert plain.posterior.sizes["chain"] == 3 and plain.posterior.sizes["draw"] == 50
    np.testing.assert_array_equal(plain.posterior["mu"], theta[..., 0])
    np.testing.assert_array_equal(plain.posterior["log_sigma"], theta[..., 1])
    np.testing.assert_array_equal(plain.sample_stats["diverging"], divergent)

    default = to_inference_data(theta)
    assert list(default.posterior.data_vars) == ["theta[0]", "theta[1]"]

    # A transform per draw: names from its NamedTuple, its dict, or given.
    named = to_inference_data(theta, transform=lambda th: Natural(th[0], jnp.exp(th[1])))
    keyed = to_inference_data(theta, transform=lambda th: {"m": th[0], "s": jnp.exp(th[1])})
    array = to_inference_data(theta, ["m", "s"], transform=lambda th: th.at[1].set(jnp.exp(th[1])))
    assert list(named.posterior.data_vars) == ["mu", "sigma"]
    for idata, (m, s) in ((named, ("mu", "sigma")), (keyed, ("m", "s")), (array, ("m", "s"))):
        np.testing.assert_array_equal(idata.posterior[m], theta[..., 0])
        np.testing.assert_allclose(idata.posterior[s], np.exp(theta[..., 1]), rtol=1e-15)

    # Already named (C, S) draws, e.g. from another sampler.
    given = to_inference_data({"a": theta[..., 0], "b": theta[..., 1]})
    np.testing.assert_array_equal(given.posterior["b"], theta[..., 1])


def test_conversion_of_a_run_keeps_its_steps(dense_run):
    idata = to_inference_data(dense_run, transform=lambda x: x - MEAN)
    np.testing.assert_array_equal(idata.sample_stats["n_steps"], dense_run.steps)
    np.testing.assert_array_equal(idata.posterior["theta[4]"], dense_run.samples[..., 4] - MEAN[4])


def test_summary_is_arviz_summary_in_our_order(rng):
    draws = rng.normal(size=(4, 500, 3)) * np.array([1.0, 2.0, 0.5]) + np.array([0.0, 1.0, -1.0])
    names = ["c", "a", "b"]  # not alphabetical: rows keep this order
    table = summary(draws, names)
    assert list(table.index) == names
    expected = az.summary(az.from_dict(posterior={n: draws[..., i] for i, n in enumerate(names)}),
                          round_to="none")
    np.testing.assert_array_equal(table.to_numpy(), expected.loc[names].to_numpy())
    # Known answers for independent draws: ESS near the number of draws, R-hat
    # near one, MCSE of the mean near sd / sqrt(n).
    n = draws.shape[0] * draws.shape[1]
    np.testing.assert_allclose(table["ess_bulk"], n, rtol=0.2)
    assert table["r_hat"].max() < 1.01
    np.testing.assert_allclose(table["mcse_mean"], draws.std(axis=(0, 1)) / np.sqrt(n), rtol=0.2)
    # An InferenceData in, a subset of its variables, rounded on request.
    idata = to_inference_data(draws, names)
    np.testing.assert_array_equal(summary(idata, ["b", "c"]).to_numpy(), table.loc[["b", "c"]])
    np.testing.assert_array_equal(summary(idata, round_to=2).to_numpy(), table.round(2))
    with pytest.raises(ValueError, match="transform must be None"):
        summary(idata, transform=lambda x: x)


def test_summary_detects_chains_that_disagree(rng):
    draws = rng.normal(size=(4, 500, 1))
    draws[0] += 1.0
    assert summary(draws)["r_hat"].iloc[0] > 1.05


def test_modules_import_without_blackjax_arviz_or_statsmodels():
    """The package's own dependencies suffice to import the modules, the model
    of lecture 4 included (the ``lectures`` extra brings blackjax, arviz and
    statsmodels)."""
    code = ("import sys\n"
            "for name in ('blackjax', 'arviz', 'statsmodels', 'pandas'):\n"
            "    sys.modules[name] = None  # any import of it raises ImportError\n"
            "import lecture_utils.sampling, lecture_utils.data, lecture_utils.trend_cycle\n"
            "from lecture_utils.sampling import NUTSRun, run_nuts\n")
    subprocess.run([sys.executable, "-c", code], check=True,
                   env=dict(os.environ, LECTURE_UTILS_NO_CACHE="1"))


def test_nutsrun_fields_are_the_ones_lectures_and_benchmarks_read():
    assert NUTSRun._fields == ("samples", "grad_evals", "warmup_grad_evals", "divergences",
                               "step_size", "inverse_mass_matrix", "steps")
