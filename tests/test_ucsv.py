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
    particles = pytest.importorskip("particles")
    from particles import distributions as dists
    from particles import state_space_models as ssm

    y = np.asarray(inflation[:, 0])
    params = ucsv.UCSVParams()

    def move(x0, rng_size):
        """One UC-SV transition in NumPy, x (P, 3) = (tau, h_eps, h_eta)."""
        nu = np.random.normal(size=(rng_size, 3))
        h_eps = x0[:, 1] + params.gamma_eps * nu[:, 0]
        h_eta = x0[:, 2] + params.gamma_eta * nu[:, 1]
        return np.stack([x0[:, 0] + np.exp(h_eta / 2) * nu[:, 2], h_eps, h_eta], axis=1)

    class Initial(dists.ProbDist):  # particles' X_0 is our x_1: draw x_0, move once
        dim = 3

        def rvs(self, size=None):
            loc = np.array([params.tau0_mean, params.h0_mean, params.h0_mean])
            scale = np.array([params.tau0_sd, params.h0_sd, params.h0_sd])
            return move(loc + scale * np.random.normal(size=(size, 3)), size)

    class Move(dists.ProbDist):
        dim = 3

        def __init__(self, xp):
            self.xp = xp

        def rvs(self, size=None):
            return move(self.xp, size)

    class UCSV(ssm.StateSpaceModel):
        def PX0(self):
            return Initial()

        def PX(self, t, xp):
            return Move(xp)

        def PY(self, t, xp, x):
            return dists.Normal(loc=x[:, 0], scale=np.exp(x[:, 1] / 2))

    S, P = 200, 200
    theirs = []
    for seed in range(S):
        np.random.seed(seed)
        pf = particles.SMC(fk=ssm.Bootstrap(ssm=UCSV(), data=y), N=P, ESSrmin=0.5,
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
