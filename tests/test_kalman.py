"""The sequential filter against independent answers: a dense Gaussian, statsmodels,
a NumPy loop, the Riccati gain, finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import as_jax, random_lss, simulate_data

from lecture_utils.gradcheck import check_jvp, check_vjp, random_like
from lecture_utils.kalman import kalman_filter, kalman_filter_numpy, steady_state_gain
from lecture_utils.kalman.reference import dense_filter, dense_loglik, statsmodels_filter
from lecture_utils.simulation import LSSModel


@pytest.fixture
def problem(rng):
    model = random_lss(rng, N=3, K=2, M=2, L=2)
    mu0, Sigma0 = rng.normal(size=3), np.eye(3) * 0.5
    return model, mu0, Sigma0, simulate_data(rng, model, 25, mu0, Sigma0)


def test_shapes_and_first_row(problem):
    model, mu0, Sigma0, y = problem
    r = kalman_filter(model, mu0, Sigma0, y)
    assert r.loglik.shape == ()
    assert r.mu.shape == (26, 3) and r.Sigma.shape == (26, 3, 3)
    assert r.gain.shape == (25, 3, 2) and r.innovation.shape == (25, 2)
    assert r.innovation_cov.shape == (25, 2, 2)
    np.testing.assert_array_equal(r.mu[0], mu0)
    np.testing.assert_array_equal(r.Sigma[0], Sigma0)


@pytest.mark.parametrize("seed", range(3))
def test_matches_numpy_references(seed):
    rng = np.random.default_rng(seed)
    model = random_lss(rng, N=4, K=3, M=2, L=2)
    mu0, Sigma0 = rng.normal(size=4), np.diag(rng.uniform(0.5, 2, size=4))
    y = simulate_data(rng, model, 60, mu0, Sigma0)
    r = kalman_filter(model, mu0, Sigma0, y, jitter=0.0)
    # The NumPy reference, every field of the result.
    ref = kalman_filter_numpy(model, mu0, Sigma0, y, jitter=0.0)
    np.testing.assert_allclose(r.loglik, ref.loglik, rtol=1e-10)
    for name in ("mu", "Sigma", "gain", "innovation", "innovation_cov"):
        np.testing.assert_allclose(getattr(r, name), getattr(ref, name), atol=1e-10,
                                   err_msg=name)
    A, C, G, H = model
    P_hat = A @ np.asarray(r.Sigma[:-1]) @ A.T + C @ C.T  # S_t = G P_hat G' + H H'
    np.testing.assert_allclose(r.innovation_cov, G @ P_hat @ G.T + H @ H.T, atol=1e-10)


@pytest.mark.parametrize("seed", range(3))
def test_loglik_and_filtered_moments_equal_dense_gaussian(seed):
    rng = np.random.default_rng(100 + seed)
    model = random_lss(rng, N=3, K=2, M=2, L=2)
    mu0, Sigma0 = rng.normal(size=3), np.eye(3)
    y = simulate_data(rng, model, 12, mu0, Sigma0)
    r = kalman_filter(model, mu0, Sigma0, y, jitter=0.0)
    np.testing.assert_allclose(r.loglik, dense_loglik(model, mu0, Sigma0, y), rtol=1e-9)
    mu, Sigma = dense_filter(model, mu0, Sigma0, y)  # E[x_t | y[:t]], Cov[x_t | y[:t]]
    np.testing.assert_allclose(r.mu, mu, atol=1e-9)
    np.testing.assert_allclose(r.Sigma, Sigma, atol=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_matches_statsmodels_on_random_models(seed):
    rng = np.random.default_rng(200 + seed)
    N, M = int(rng.integers(1, 6)), int(rng.integers(1, 4))
    K = int(rng.integers(1, N + 1))  # statsmodels needs K <= N
    L = M + int(rng.integers(0, 2))  # L >= M keeps H H' positive definite
    model = random_lss(rng, N=N, K=K, M=M, L=L)
    mu0, Sigma0 = rng.normal(size=N), np.eye(N)
    y = simulate_data(rng, model, 50, mu0, Sigma0)
    r = kalman_filter(model, mu0, Sigma0, y, jitter=0.0)
    llf, filtered, filtered_cov = statsmodels_filter(model, mu0, Sigma0, y)
    np.testing.assert_allclose(r.loglik, llf, rtol=1e-9)
    np.testing.assert_allclose(r.mu[1:], filtered, atol=1e-8)
    np.testing.assert_allclose(r.Sigma[1:], filtered_cov, atol=1e-8)


def test_gain_converges_to_riccati_steady_state(rng):
    model = LSSModel(np.array([[0.9, 0.1], [-0.1, 0.8]]), 0.1 * np.eye(2), np.eye(2),
                     0.05 * np.eye(2))
    y = simulate_data(rng, model, 200, np.zeros(2), np.eye(2))
    r = kalman_filter(model, np.zeros(2), np.eye(2), y, jitter=0.0)
    np.testing.assert_allclose(r.gain[-1], steady_state_gain(model), rtol=1e-6)


def test_jitter_is_relative_to_the_diagonal_of_S(rng):
    # A jitter large enough to matter, against the tests' loop that multiplies each
    # diagonal entry of S_t by (1 + jitter).
    model = random_lss(rng, N=3, K=2, M=2, L=2)
    mu0, Sigma0 = rng.normal(size=3), np.eye(3)
    y = simulate_data(rng, model, 25, mu0, Sigma0)
    r = kalman_filter(model, mu0, Sigma0, y, jitter=1e-3)
    ref = kalman_filter_numpy(model, mu0, Sigma0, y, jitter=1e-3)
    np.testing.assert_allclose(r.loglik, ref.loglik, rtol=1e-10)
    np.testing.assert_allclose(r.mu, ref.mu, atol=1e-10)
    assert abs(ref.loglik - kalman_filter_numpy(model, mu0, Sigma0, y, jitter=0.0).loglik) > 1e-3


@pytest.mark.parametrize("c", [1e-3, 7.0, 1e4])
def test_rescaling_the_data_changes_loglik_by_the_jacobian_only(problem, c):
    # x -> c x: y, C, H, mu0 scale by c and Sigma0 by c^2; A and G are unchanged.
    # With the default (relative) jitter, log p changes by exactly -T M log c.
    model, mu0, Sigma0, y = problem
    A, C, G, H = model
    base = kalman_filter(model, mu0, Sigma0, y).loglik
    scaled = kalman_filter(LSSModel(A, c * C, G, c * H), c * mu0, c**2 * Sigma0, c * y).loglik
    T, M = y.shape
    np.testing.assert_allclose(scaled, base - T * M * np.log(c), rtol=1e-9)


def test_gradients_against_finite_differences(problem, key):
    model, mu0, Sigma0, y = problem
    args = (as_jax(model), jnp.asarray(mu0))
    y = jnp.asarray(y[:8])
    loglik = jax.jit(lambda model, mu0: kalman_filter(model, mu0, Sigma0, y).loglik)

    check_vjp(loglik, args, key=key, rtol=1e-6)  # reverse vs forward vs central difference
    # Each model matrix and mu0 on its own, along a random direction.
    grads = jax.jit(jax.grad(loglik, argnums=(0, 1)))(*args)
    zero = jax.tree.map(jnp.zeros_like, args)
    for i, name in enumerate(["A", "C", "G", "H", "mu0"]):
        leaf = args[0][i] if i < 4 else args[1]
        d = random_like(jax.random.fold_in(key, i), leaf)
        direction = ((zero[0]._replace(**{name: d}), zero[1]) if i < 4 else (zero[0], d))
        fd = check_jvp(loglik, args, direction)  # forward mode vs central difference
        np.testing.assert_allclose(jnp.vdot(grads[i // 4][i % 4] if i < 4 else grads[1], d),
                                   fd, rtol=1e-6, err_msg=name)


def test_works_under_jit_and_vmap(problem):
    model, mu0, Sigma0, y = problem
    model = as_jax(model)
    f = jax.jit(lambda A: kalman_filter(model._replace(A=A), mu0, Sigma0, y).loglik)
    batch = jax.vmap(f)(jnp.stack([model.A, 0.5 * model.A]))
    for b, A in enumerate([model.A, 0.5 * model.A]):  # each against the tests' loop
        ref = kalman_filter_numpy(model._replace(A=A), mu0, Sigma0, y, jitter=1e-8).loglik
        np.testing.assert_allclose(batch[b], ref, rtol=1e-10)


def test_many_observables_use_the_library_routines_and_agree(rng):
    # M above MAX_UNROLLED_M takes the jnp.linalg branch.
    model = random_lss(rng, N=4, K=3, M=8, L=8)
    mu0, Sigma0 = np.zeros(4), np.eye(4)
    y = simulate_data(rng, model, 30, mu0, Sigma0)
    r = kalman_filter(model, mu0, Sigma0, y, jitter=0.0)
    np.testing.assert_allclose(r.loglik, dense_loglik(model, mu0, Sigma0, y), rtol=1e-9)
    ref = kalman_filter_numpy(model, mu0, Sigma0, y, jitter=0.0)
    for name in ("mu", "Sigma", "gain", "innovation"):
        np.testing.assert_allclose(getattr(r, name), getattr(ref, name), atol=1e-9, err_msg=name)
