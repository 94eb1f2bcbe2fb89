"""Tests of the correlated-shock trend-cycle model (lecture 4, "What Identifies
the Cycle") and of the committed simulation-based calibration of NUTS on
lecture 4's own posterior (benchmarks/sbc_trend_cycle.py).

The correlated model's log-likelihood is checked against two references that
share no code with the book's filter: the dense Gaussian density of all T
observations and statsmodels' generic state-space filter (its
UnobservedComponents cannot correlate shocks; its KalmanFilter takes any
state covariance).
"""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from helpers import INDEPENDENT_RTOL, load_benchmark

import lecture_utils  # noqa: F401  (float64)
from lecture_utils import trend_cycle as tc
from lecture_utils.data import load_gdp
from lecture_utils.kalman.reference import dense_loglik, statsmodels_kalman

ROOT = Path(__file__).resolve().parents[1]
P = tc.TrendCycleParams(*map(jnp.asarray, (1.1, 0.02, 0.8, 1.6, -0.67)))


def _gdp():
    _, gdp = load_gdp()
    return gdp[0], jnp.asarray(gdp[1:])


def test_correlated_shocks_enter_C_C_transposed():
    for rho in (-0.93, 0.0, 0.4, 1.0):
        C = np.asarray(tc.trend_cycle_model(P, rho).C)
        Q = C @ C.T
        expected = np.zeros((4, 4))
        expected[0, 0], expected[1, 1], expected[2, 2] = 1.1**2, 0.02**2, 0.8**2
        expected[0, 2] = expected[2, 0] = rho * 1.1 * 0.8
        np.testing.assert_allclose(Q, expected, rtol=1e-14, atol=1e-15)
    # rho = 0 is Clark's model exactly, the default.
    for a, b in zip(tc.trend_cycle_model(P), tc.trend_cycle_model(P, 0.0)):
        np.testing.assert_array_equal(a, b)
    assert np.count_nonzero(np.asarray(tc.trend_cycle_model(P).C)) == 3


def test_correlated_loglik_matches_dense_gaussian_and_statsmodels():
    y_first, y = _gdp()
    for rho in (-0.93, 0.5):
        model = tc.trend_cycle_model(P, rho)
        mu0, Sigma0 = tc.initial_moments(P, y_first)
        ours = tc.loglik(P, y_first, y, rho=rho)
        np.testing.assert_allclose(ours, dense_loglik(model, mu0, Sigma0, y[:, None]),
                                   rtol=1e-8)
        sm = statsmodels_kalman(model, mu0, Sigma0, np.asarray(y)[:, None]).loglike()
        np.testing.assert_allclose(ours, sm, rtol=INDEPENDENT_RTOL)
    # The correlation changes the likelihood (the test can fail).
    assert abs(tc.loglik(P, y_first, y, rho=-0.93) - tc.loglik(P, y_first, y)) > 1.0


def test_gradient_in_rho_matches_finite_differences():
    y_first, y = _gdp()
    f = jax.jit(lambda rho: tc.loglik(P, y_first, y, rho=rho))
    for rho in (-0.9, 0.3):
        h = 1e-5
        fd = (f(rho + h) - f(rho - h)) / (2 * h)
        np.testing.assert_allclose(jax.grad(f)(rho), fd, rtol=1e-6)


# --- the committed calibration -------------------------------------------------------

def test_sbc_on_the_lectures_posterior_committed_result():
    """Ranks uniform (chi-square per coordinate, family-wise level 0.01), no
    divergences to speak of, the slope shock near zero well represented, and
    the committed replications simulated by this code (the true parameters
    of chunk 0 re-drawn; the NUTS runs are too slow for the test command)."""
    result = json.loads((ROOT / "benchmarks" / "results" / "sbc_trend_cycle.json").read_text())
    sbc = load_benchmark("sbc_trend_cycle")
    ranks = np.array(result["ranks"])
    n = result["replications"]
    assert ranks.shape == (n, 5) and n >= 100
    assert ranks.min() >= 0 and ranks.max() <= sbc.NUM_RANK_DRAWS
    pvalues = sbc.rank_uniformity_pvalues(ranks, sbc.NUM_RANK_DRAWS, sbc.NUM_BINS)
    np.testing.assert_allclose(pvalues, list(result["chi2_pvalues"].values()))
    assert min(pvalues) > 0.01 / 5, pvalues
    assert sum(result["divergences"]) <= 0.01 * n * sbc.THIN * sbc.NUM_RANK_DRAWS
    slope = np.array(result["true_sigma_slope"])
    assert np.sum(slope < 0.025) >= 0.05 * n  # near zero (the prior: a fifth)
    # The committed truth comes from this code: re-draw chunk 0's parameters.
    keys = jax.random.split(jax.random.fold_in(jax.random.key(sbc.SEED), 0), sbc.CHUNK)
    theta, y = jax.vmap(lambda k: sbc.simulate(jax.random.split(k)[0]))(keys)
    np.testing.assert_allclose(np.exp(theta[:, 1]), slope[:sbc.CHUNK], rtol=1e-12)
    assert y.shape == (sbc.CHUNK, sbc.T_OBS) and np.all(np.isfinite(y))
