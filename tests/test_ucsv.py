"""The UC-SV model: its two filter forms against the Kalman filter (no stochastic
volatility), against each other, and against Chopin's ``particles`` library (an
independent NumPy implementation of the same model and filter); the prior and the
data against scipy and statsmodels."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from lecture_utils import ucsv
from lecture_utils.kalman import kalman_loglik
from lecture_utils.particle_filter import FilterNoise
from lecture_utils.simulation import LSSModel


@pytest.fixture(scope="module")
def inflation():
    return ucsv.load_inflation()[1]


def np_noise(seed, S, T, P, K):
    """UC-SV noise for S seeds from NumPy (no PRNG program to compile)."""
    rng = np.random.default_rng(seed)
    return ucsv.UCSVNoise(jnp.asarray(rng.normal(size=(S, P, K))),
                          FilterNoise(jnp.asarray(rng.normal(size=(S, T, P, K))),
                                      jnp.asarray(rng.normal(size=(S, T)))))


def test_data_and_prior(inflation):
    dates, y = ucsv.load_inflation()
    assert y.shape == (202, 1) and dates[0] == 1959.25 and dates[-1] == 2009.5
    np.testing.assert_allclose(y[[0, 1, -1], 0], [2.34, 2.74, 3.56])
    theta = np.array([np.log(0.1), np.log(0.7)])
    expected = stats.lognorm(s=1.0, scale=0.2).logpdf(np.exp(theta)).sum() + theta.sum()
    np.testing.assert_allclose(ucsv.log_prior(theta), expected, rtol=1e-12)
    p = ucsv.to_params(theta)
    np.testing.assert_allclose([p.gamma_eps, p.gamma_eta], [0.1, 0.7], rtol=1e-12)


def test_simulated_shocks_are_standard_normal():
    params = ucsv.UCSVParams(gamma_eps=0.3, gamma_eta=0.1)
    x, y = ucsv.simulate(jax.random.key(0), params, T=4000)
    x, y = np.asarray(x), np.asarray(y)
    shocks = [np.diff(x[:, 1]) / 0.3, np.diff(x[:, 2]) / 0.1,
              np.diff(x[:, 0]) / np.exp(x[1:, 2] / 2), (y[:, 0] - x[1:, 0]) / np.exp(x[1:, 1] / 2)]
    for e in shocks:
        assert stats.kstest(e, "norm").pvalue > 1e-3


def test_rb_filter_without_stochastic_volatility_is_the_kalman_filter(inflation):
    params = ucsv.UCSVParams(gamma_eps=0.0, gamma_eta=0.0, h0_mean=0.3, h0_sd=0.0)
    noise = jax.tree.map(lambda a: a[0], np_noise(0, 1, 202, 3, 2))
    res = ucsv.filter_rb(params, inflation, noise)
    sd = np.exp(0.3 / 2) * np.ones((1, 1))
    model = LSSModel(np.eye(1), sd, np.eye(1), sd)
    exact = kalman_loglik(model, np.zeros(1), 25.0 * np.eye(1), inflation)
    np.testing.assert_allclose(res.loglik, exact, rtol=1e-12)


def test_rb_and_bootstrap_estimate_the_same_likelihood_rb_with_less_variance(inflation):
    """First 80 quarters, P = 300, 200 seeds each: the likelihood estimates (not logs) have
    the same mean within MC error, and the RB log-likelihood's variance is far smaller."""
    y, S, P = inflation[:80], 200, 300
    params = ucsv.UCSVParams()
    rb = jax.jit(jax.vmap(lambda u: ucsv.filter_rb(params, y, u, history=False).loglik))(
        np_noise(1, S, 80, P, 2))
    bs = jax.jit(jax.vmap(lambda u: ucsv.filter_bootstrap(params, y, u, history=False).loglik))(
        np_noise(2, S, 80, P, 3))
    rb, bs = np.asarray(rb), np.asarray(bs)
    c = rb.mean()
    r_rb, r_bs = np.exp(rb - c), np.exp(bs - c)
    se = np.sqrt(r_rb.var() / S + r_bs.var() / S)
    assert abs(r_rb.mean() - r_bs.mean()) < 4 * se, (r_rb.mean(), r_bs.mean(), se)
    assert rb.var() < 0.5 * bs.var(), (rb.var(), bs.var())  # F test: 0.5 is far in the tail


# ----- the same model and filter in Chopin's particles ------------------------------------


def test_bootstrap_agrees_with_particles_library(inflation):
    import particles
    from particles import state_space_models as ssm

    y = np.asarray(inflation[:, 0])
    params = ucsv.UCSVParams()
    model = ucsv.particles_model(params)
    S, P = 200, 200
    theirs = []
    for seed in range(S):
        np.random.seed(seed)
        pf = particles.SMC(fk=ssm.Bootstrap(ssm=model, data=y), N=P, ESSrmin=0.5,
                           resampling="systematic")
        pf.run()
        theirs.append(pf.logLt)
    ours = np.asarray(jax.jit(jax.vmap(
        lambda u: ucsv.filter_bootstrap(params, inflation, u, history=False).loglik))(
            np_noise(3, S, 202, P, 3)))
    theirs = np.asarray(theirs)
    se = np.sqrt(ours.var() / S + theirs.var() / S)
    assert abs(ours.mean() - theirs.mean()) < 4 * se, (ours.mean(), theirs.mean(), se)
    assert 0.75 < ours.std() / theirs.std() < 1.33, (ours.std(), theirs.std())
    assert stats.ks_2samp(ours, theirs).pvalue > 1e-3


def test_rb_gradient_without_resampling_matches_finite_differences(inflation):
    """Without resampling the RB estimate is smooth in (gamma_eps, gamma_eta): autodiff through
    the vmapped Kalman steps equals central differences on the same noise."""
    noise = jax.tree.map(lambda a: a[0], np_noise(4, 1, 40, 30, 2))

    def loglik(theta):
        return ucsv.filter_rb(ucsv.to_params(theta), inflation[:40], noise,
                              ess_threshold=0.0).loglik

    theta = jnp.log(jnp.array([0.3, 0.15]))
    grad = jax.grad(loglik)(theta)
    h = 1e-5
    fd = [(loglik(theta + h * e) - loglik(theta - h * e)) / (2 * h) for e in jnp.eye(2)]
    np.testing.assert_allclose(grad, fd, rtol=1e-6)


def test_transition_logpdf_is_the_density_of_transition(rng):
    """log p(x' | x) = log phi(w) - log |dx'/dw|, with the Jacobian of w -> x' in closed form."""
    params = ucsv.UCSVParams(gamma_eps=0.3, gamma_eta=0.15)
    for _ in range(5):
        x, w = rng.normal(size=3), rng.normal(size=3)
        x_next = ucsv.transition(x, w, params, 0)
        log_jac = np.log(0.3) + np.log(0.15) + float(x_next[2]) / 2
        expected = stats.norm.logpdf(w).sum() - log_jac
        np.testing.assert_allclose(ucsv.transition_logpdf(x_next, x, params, 0), expected,
                                   rtol=1e-12)
