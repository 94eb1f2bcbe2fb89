"""The associative-scan filter against the sequential one and against independent answers
(the tests' NumPy loop, the dense Gaussian), gradients and missing data included."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import as_jax, random_direction, random_lss, simulate_data, with_missing

from lecture_utils.gradcheck import assert_trees_close_normwise, central_difference, tree_dot
from lecture_utils.kalman import kalman_filter, kalman_filter_numpy
from lecture_utils.kalman.reference import dense_filter, dense_loglik
from lecture_utils.simulation import LSSModel

FIELDS = ("mu", "Sigma", "gain", "innovation", "innovation_cov")


@pytest.mark.parametrize("T", [1, 2, 37, 300])  # 37, 300: blocks padded at the end
@pytest.mark.parametrize("mean", [0.0, 1e3])  # a large initial mean
def test_parallel_equals_sequential_and_the_numpy_loop(rng, T, mean):
    model = random_lss(rng, N=4, K=3, M=2, L=2)
    mu0, Sigma0 = np.full(4, mean), 0.5 * np.eye(4)
    y = simulate_data(rng, model, T, mu0, Sigma0)
    seq = kalman_filter(model, mu0, Sigma0, y, jitter=0.0)
    par = kalman_filter(model, mu0, Sigma0, y, jitter=0.0, method="parallel")
    np.testing.assert_allclose(par.loglik, seq.loglik, rtol=1e-8)
    scale = 1.0 + mean
    for name in FIELDS:
        np.testing.assert_allclose(getattr(par, name), getattr(seq, name),
                                   atol=1e-9 * scale, err_msg=name)
    # Independent answers: the tests' NumPy loop (gain and innovation included) and the
    # package's NumPy reference.
    ref = kalman_filter_numpy(model, mu0, Sigma0, y, jitter=0.0)
    np.testing.assert_allclose(par.loglik, ref.loglik, rtol=1e-9)
    for name in ("mu", "Sigma", "gain", "innovation"):
        np.testing.assert_allclose(getattr(par, name), getattr(ref, name), atol=1e-9 * scale,
                                   err_msg=name)
    np.testing.assert_allclose(par.loglik, kalman_filter_numpy(model, mu0, Sigma0, y,
                                                                jitter=0.0)[0], rtol=1e-9)
    if T <= 2:  # short enough for the dense Gaussian
        np.testing.assert_allclose(par.loglik, dense_loglik(model, mu0, Sigma0, y), rtol=1e-9)
        mu, Sigma = dense_filter(model, mu0, Sigma0, y)
        np.testing.assert_allclose(par.mu, mu, atol=1e-9 * scale)
        np.testing.assert_allclose(par.Sigma, Sigma, atol=1e-9)


def test_parallel_with_missing_data(rng):
    model = random_lss(rng, N=3, K=2, M=3, L=3)
    mu0, Sigma0 = rng.normal(size=3), np.eye(3)
    y = with_missing(rng, simulate_data(rng, model, 5, mu0, Sigma0), 0.2, nan_rows=[0, 2],
                     nan_col_rows=[3])
    seq = kalman_filter(model, mu0, Sigma0, y, jitter=0.0)
    par = kalman_filter(model, mu0, Sigma0, y, jitter=0.0, method="parallel")
    np.testing.assert_allclose(par.loglik, dense_loglik(model, mu0, Sigma0, y), rtol=1e-9)
    np.testing.assert_allclose(par.loglik, seq.loglik, rtol=1e-10)
    for name in FIELDS:
        np.testing.assert_allclose(getattr(par, name), getattr(seq, name), atol=1e-9,
                                   err_msg=name)


# M > 6: the library Cholesky; N = 8: larger scan elements.
@pytest.mark.parametrize("N,M", [(3, 8), (8, 2)])
def test_parallel_with_default_jitter_and_large_dimensions(rng, N, M):
    model = random_lss(rng, N=N, K=3, M=M, L=M)
    y = simulate_data(rng, model, 50, np.zeros(N), np.eye(N))
    par = kalman_filter(model, np.zeros(N), np.eye(N), y, method="parallel")
    # The sequential filter's jitter scales S_t, the parallel one's each element's S; both
    # move the log-likelihood by ~1e-8 relative (measured), and agree to ~1e-10.
    ref = kalman_filter_numpy(model, np.zeros(N), np.eye(N), y, jitter=1e-8).loglik
    np.testing.assert_allclose(par.loglik, ref, rtol=1e-9)
    np.testing.assert_allclose(par.loglik, kalman_filter(model, np.zeros(N), np.eye(N), y).loglik,
                               rtol=1e-9)


def test_parallel_gradient(rng):
    # The shapes of test_parallel_with_missing_data, so the filter compiles once; the
    # gradient of the parallel scan is slow to compile (~25 s of CPU here), so once only.
    # T = 5 makes two blocks of three, the last padded with the neutral element.
    model = as_jax(random_lss(rng, N=3, K=2, M=3, L=3))
    mu0, Sigma0 = jnp.array([5.0, -2.0, 1.0]), jnp.eye(3)
    y = jnp.asarray(with_missing(rng, simulate_data(rng, model, 5, mu0, Sigma0), 0.1))

    def loglik(model, mu0, method="parallel"):
        return kalman_filter(model, mu0, Sigma0, y, jitter=0.0, method=method).loglik

    par = jax.jit(jax.grad(loglik, argnums=(0, 1)))(model, mu0)
    seq = jax.jit(jax.grad(lambda m, mu: loglik(m, mu, "sequential"), argnums=(0, 1)))(model,
                                                                                      mu0)
    assert_trees_close_normwise(par, seq, rtol=1e-8)
    args = (model, mu0)
    for _ in range(2):  # along random directions, against central differences of the value
        d = random_direction(rng, args)
        fd = central_difference(loglik, args, d, eps=1e-6)
        np.testing.assert_allclose(tree_dot(par, d), fd, rtol=1e-6, atol=1e-8)


def singular_element_model():
    """H = 0, only state 0 observed, shocks only to state 1: G C C' G' + H H' = 0, yet every
    S_t = (A Sigma_t A')[0, 0] > 0 because state 1 feeds state 0."""
    return LSSModel(np.array([[0.9, 0.5], [0.0, 0.8]]), np.array([[0.0], [1.0]]),
                    np.array([[1.0, 0.0]]), np.zeros((1, 1)))


def test_parallel_refuses_singular_elements_and_says_what_it_needs(rng):
    model = singular_element_model()
    y = simulate_data(rng, model, 6, np.zeros(2), np.eye(2))
    seq = kalman_filter(model, np.zeros(2), np.eye(2), y, jitter=0.0)  # fine sequentially
    np.testing.assert_allclose(seq.loglik, dense_loglik(model, np.zeros(2), np.eye(2), y),
                               rtol=1e-9)
    with pytest.raises(ValueError, match=r"parallel.*needs G C C' G' \+ H H' positive definite"):
        kalman_filter(model, np.zeros(2), np.eye(2), y, jitter=0.0, method="parallel")


def test_unknown_method_is_refused(rng):
    model = random_lss(rng)
    with pytest.raises(ValueError, match="method must be one of"):
        kalman_filter(model, np.zeros(3), np.eye(3), np.zeros((4, 2)), method="fast")
