"""Missing observations (NaN in y) against a dense Gaussian of the observed entries,
statsmodels with NaN in endog, and the tests' NumPy loop that drops rows."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import as_jax, random_direction, random_lss, simulate_data, with_missing

from lecture_utils.gradcheck import central_difference, tree_dot
from lecture_utils.kalman import (
    kalman_filter,
    kalman_filter_numpy,
    kalman_loglik,
    kalman_loglik_batch,
)
from lecture_utils.kalman.reference import dense_filter, dense_loglik, statsmodels_filter

T = 12


def problem(seed, N=3, K=2, M=3, L=3):
    rng = np.random.default_rng(seed)
    model = random_lss(rng, N=N, K=K, M=M, L=L)
    mu0, Sigma0 = rng.normal(size=N), np.diag(rng.uniform(0.5, 2.0, size=N))
    y = simulate_data(rng, model, T, mu0, Sigma0)
    # Random holes, an all-NaN row (t = 4) and a stretch without series 0.
    return model, mu0, Sigma0, with_missing(rng, y, 0.2, nan_rows=[4], nan_col_rows=[7, 8, 9])


@pytest.mark.parametrize("seed", range(3))
def test_loglik_and_filtered_moments_equal_dense_gaussian(seed):
    model, mu0, Sigma0, y = problem(seed)
    r = kalman_filter(model, mu0, Sigma0, y, jitter=0.0)
    np.testing.assert_allclose(r.loglik, dense_loglik(model, mu0, Sigma0, y), rtol=1e-9)
    mu, Sigma = dense_filter(model, mu0, Sigma0, y)
    np.testing.assert_allclose(r.mu, mu, atol=1e-9)
    np.testing.assert_allclose(r.Sigma, Sigma, atol=1e-9)
    np.testing.assert_allclose(kalman_loglik(model, mu0, Sigma0, y, jitter=0.0), r.loglik,
                               rtol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_matches_statsmodels_with_nan_in_endog(seed):
    model, mu0, Sigma0, y = problem(10 + seed)
    r = kalman_filter(model, mu0, Sigma0, y, jitter=0.0)
    llf, filtered, filtered_cov = statsmodels_filter(model, mu0, Sigma0, y)
    np.testing.assert_allclose(r.loglik, llf, rtol=1e-9)
    np.testing.assert_allclose(r.mu[1:], filtered, atol=1e-8)
    np.testing.assert_allclose(r.Sigma[1:], filtered_cov, atol=1e-8)


def test_innovation_and_gain_are_zero_where_missing_and_equal_the_reference_elsewhere():
    model, mu0, Sigma0, y = problem(20)
    r = kalman_filter(model, mu0, Sigma0, y, jitter=0.0)
    missing = np.isnan(y)
    assert np.all(np.asarray(r.innovation)[missing] == 0.0)
    gain = np.moveaxis(np.asarray(r.gain), 2, 1)  # (T, M, N): one row per series
    assert np.all(gain[missing] == 0.0)
    ref = kalman_filter_numpy(model, mu0, Sigma0, y, jitter=0.0)  # selects the observed rows instead
    np.testing.assert_allclose(r.innovation, ref.innovation, atol=1e-10)
    np.testing.assert_allclose(r.gain, ref.gain, atol=1e-10)


def test_all_nan_row_skips_the_update():
    model, mu0, Sigma0, y = problem(21)
    A, C, G, H = model
    r = kalman_filter(model, mu0, Sigma0, y)
    np.testing.assert_allclose(r.mu[5], A @ np.asarray(r.mu[4]), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(r.Sigma[5], A @ np.asarray(r.Sigma[4]) @ A.T + C @ C.T,
                               rtol=1e-12, atol=1e-15)
    # Every row missing: the log-likelihood of nothing is 0 and the filter only predicts.
    r = kalman_filter(model, mu0, Sigma0, np.full((3, 3), np.nan))
    assert r.loglik == 0.0
    np.testing.assert_allclose(r.mu[3], np.linalg.matrix_power(A, 3) @ mu0, rtol=1e-12)


def test_a_missing_entry_is_the_same_as_dropping_that_series_from_the_model():
    # One series missing throughout: the model with G and H cut to the other rows.
    model, mu0, Sigma0, y = problem(22)
    y = np.array(y)
    y[:, 1] = np.nan
    keep = [0, 2]
    cut = model._replace(G=model.G[keep], H=model.H[keep])
    np.testing.assert_allclose(kalman_loglik(model, mu0, Sigma0, y),
                               kalman_loglik(cut, mu0, Sigma0, y[:, keep]), rtol=1e-12)


@pytest.mark.parametrize("bad", [np.inf, -np.inf])
def test_infinite_observations_are_refused(bad):
    model, mu0, Sigma0, y = problem(23)
    y = np.array(y)
    y[3, 1] = bad
    for f in (kalman_filter, kalman_loglik):
        with pytest.raises(ValueError, match=r"\by\b.*infinite"):
            f(model, mu0, Sigma0, y)


def test_rescaling_with_missing_data_changes_loglik_by_the_jacobian_of_observed_entries():
    model, mu0, Sigma0, y = problem(24)
    A, C, G, H = model
    c = 30.0
    base = kalman_loglik(model, mu0, Sigma0, y)
    scaled = kalman_loglik(model._replace(C=c * C, H=c * H), c * mu0, c**2 * Sigma0, c * y)
    np.testing.assert_allclose(scaled, base - np.sum(~np.isnan(y)) * np.log(c), rtol=1e-9)


def test_jit_vmap_and_grad_with_fixed_shapes():
    # Different missing patterns, one compiled program; each against the dense Gaussian.
    model, mu0, Sigma0, _ = problem(25)
    rng = np.random.default_rng(26)
    ys = np.stack([with_missing(rng, simulate_data(rng, model, T, mu0, Sigma0), 0.3)
                   for _ in range(3)])
    f = jax.jit(jax.vmap(lambda y: kalman_filter(model, mu0, Sigma0, y, jitter=0.0).loglik))
    got = f(jnp.asarray(ys))
    for b in range(3):
        np.testing.assert_allclose(got[b], dense_loglik(model, mu0, Sigma0, ys[b]), rtol=1e-9)
    # The gradient through the filter, along random directions, against central differences.
    args = (as_jax(model), jnp.asarray(mu0))
    g = jax.jit(jax.grad(lambda m, mu: kalman_filter(m, mu, Sigma0, ys[0]).loglik, (0, 1)))(
        *args)
    for k in range(2):
        d = random_direction(rng, args)
        fd = central_difference(
            lambda m, mu: kalman_filter(m, mu, Sigma0, ys[0]).loglik, args, d, eps=1e-6)
        np.testing.assert_allclose(tree_dot(g, d), fd, rtol=1e-6, atol=1e-8)


def test_batch_with_missing_data_equals_dense_gaussian():
    rng = np.random.default_rng(27)
    models = [random_lss(rng, N=3, K=2, M=3, L=3) for _ in range(3)]
    mu0, Sigma0 = rng.normal(size=3), np.eye(3)
    ys = np.stack([with_missing(rng, simulate_data(rng, m, T, mu0, Sigma0), 0.3, nan_rows=[2])
                   for m in models])
    stacked = type(models[0])(*(np.stack(x) for x in zip(*models)))
    got = kalman_loglik_batch(stacked, mu0, Sigma0, ys, jitter=0.0)
    for b, m in enumerate(models):
        np.testing.assert_allclose(got[b], dense_loglik(m, mu0, Sigma0, ys[b]), rtol=1e-9)
