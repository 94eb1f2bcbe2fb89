"""kalman_smoother against the dense Gaussian conditional of all states given all observed
data, and against statsmodels' smoother."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import as_jax, random_direction, random_lss, simulate_data, with_missing

from lecture_utils.gradcheck import central_difference, tree_dot
from lecture_utils.kalman import SmootherResult, kalman_filter, kalman_smoother
from lecture_utils.kalman.reference import dense_smoother, statsmodels_smoother

T = 12


def problem(seed, kind, missing):
    rng = np.random.default_rng(seed)
    N = 3
    if kind == "generic":
        model = random_lss(rng, N=N, K=2, M=2, L=2)
    elif kind == "singular_state_noise":  # K < N: C C' has rank one
        model = random_lss(rng, N=N, K=1, M=2, L=2)
    else:  # H = 0: exact observations of two combinations of three states
        model = random_lss(rng, N=N, K=3, M=2, L=1)._replace(H=np.zeros((2, 1)))
    mu0 = rng.normal(size=N)
    X = rng.normal(size=(N, N))
    Sigma0 = X @ X.T / N + 0.2 * np.eye(N)
    y = simulate_data(rng, model, T, mu0, Sigma0)
    if missing:
        y = with_missing(rng, y, 0.2, nan_rows=[5], nan_col_rows=[8, 9])
    return model, mu0, Sigma0, y


KINDS = ["generic", "singular_state_noise", "H_zero"]


@pytest.mark.parametrize("missing", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_smoother_equals_dense_gaussian_conditional(kind, missing):
    model, mu0, Sigma0, y = problem(KINDS.index(kind), kind, missing)
    r = kalman_smoother(model, mu0, Sigma0, y, jitter=0.0)
    assert isinstance(r, SmootherResult)
    assert r.mu.shape == (T + 1, 3) and r.Sigma.shape == (T + 1, 3, 3) and r.loglik.shape == ()
    mu, Sigma = dense_smoother(model, mu0, Sigma0, y)  # rows t = 0..T, x_0 included
    scale = 1.0 + np.abs(mu).max()
    np.testing.assert_allclose(r.mu, mu, atol=1e-9 * scale)
    np.testing.assert_allclose(r.Sigma, Sigma, atol=1e-9 * (1.0 + np.abs(Sigma).max()))
    np.testing.assert_allclose(r.loglik, kalman_filter(model, mu0, Sigma0, y, jitter=0.0).loglik,
                               rtol=1e-12)


@pytest.mark.parametrize("missing", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_smoother_equals_statsmodels(kind, missing):
    model, mu0, Sigma0, y = problem(10 + KINDS.index(kind), kind, missing)
    r = kalman_smoother(model, mu0, Sigma0, y, jitter=0.0)
    _, mu, Sigma = statsmodels_smoother(model, mu0, Sigma0, y)  # x_1..x_T: statsmodels has no x_0
    np.testing.assert_allclose(r.mu[1:], mu, atol=1e-8)
    np.testing.assert_allclose(r.Sigma[1:], Sigma, atol=1e-8)


@pytest.mark.parametrize("jitter", [0.0, 1e-8])
def test_last_row_equals_the_filter_and_smoothing_shrinks_the_covariance(jitter):
    model, mu0, Sigma0, y = problem(20, "generic", True)
    s = kalman_smoother(model, mu0, Sigma0, y, jitter=jitter)
    f = kalman_filter(model, mu0, Sigma0, y, jitter=jitter)
    np.testing.assert_allclose(s.mu[-1], f.mu[-1], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(s.Sigma[-1], f.Sigma[-1], rtol=1e-12, atol=1e-14)
    # More data, less uncertainty: Cov[x_t | all y] <= Cov[x_t | y[:t]] (Loewner order).
    assert np.all(np.linalg.eigvalsh(np.asarray(f.Sigma - s.Sigma)) > -1e-12)


def test_smoothed_means_are_differentiable():
    model, mu0, Sigma0, y = problem(21, "generic", True)
    weights = np.random.default_rng(22).normal(size=(T + 1, 3))

    def f(model, mu0, y):
        r = kalman_smoother(model, mu0, Sigma0, y, jitter=0.0)
        return jnp.sum(weights * r.mu) + jnp.sum(r.Sigma[3])

    args = (as_jax(model), jnp.asarray(mu0), jnp.asarray(y))
    g = jax.jit(jax.grad(f, argnums=(0, 1, 2)))(*args)
    rng = np.random.default_rng(23)
    for _ in range(3):  # model and mu0 along random directions, against central differences
        d = random_direction(rng, args[:2])
        fd = central_difference(lambda m, mu: f(m, mu, args[2]), args[:2], d, eps=1e-6)
        np.testing.assert_allclose(tree_dot(g[:2], d), fd, rtol=1e-6, atol=1e-8)
    # E[x | y] is linear in the observed y, and Cov[x | y] does not depend on it: the
    # y-gradient is the dense conditional's regression, read off by unit differences.
    base = np.sum(weights * dense_smoother(model, mu0, Sigma0, y)[0])
    want = np.zeros_like(y)
    for t, i in zip(*np.nonzero(~np.isnan(y))):
        e = np.zeros_like(y)
        e[t, i] = 1.0
        want[t, i] = np.sum(weights * dense_smoother(model, mu0, Sigma0, y + e)[0]) - base
    np.testing.assert_allclose(g[2], want, atol=1e-9 * np.abs(want).max())


def test_smoother_under_jit_and_vmap():
    model, mu0, Sigma0, y = problem(24, "generic", True)
    ys = jnp.stack([jnp.asarray(y), jnp.asarray(y[::-1].copy())])
    mus = jax.jit(jax.vmap(lambda y: kalman_smoother(model, mu0, Sigma0, y, jitter=0.0).mu))(ys)
    for b in range(2):
        np.testing.assert_allclose(mus[b], dense_smoother(model, mu0, Sigma0, ys[b])[0],
                                   atol=1e-9)
