"""The associative-scan filter equals the sequential one, including its gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import random_lss
from jax.test_util import check_grads

from lecture_utils.kalman import kalman_filter, kalman_filter_numpy
from lecture_utils.simulation import LSSModel, simulate_lss


def data(rng, model, T, x0):
    N, K = model.C.shape
    M, L = model.H.shape
    _, y = simulate_lss(model, x0, rng.normal(size=(T, K)), rng.normal(size=(T + 1, L)))
    return np.asarray(y[1:])


@pytest.mark.parametrize("T", [1, 2, 37, 300])
@pytest.mark.parametrize("mean", [0.0, 1e3])  # a large initial mean, far from the data
def test_parallel_equals_sequential(rng, T, mean):
    model = random_lss(rng, N=4, K=3, M=2, L=2)
    mu0, Sigma0 = np.full(4, mean), 0.5 * np.eye(4)
    y = data(rng, model, T, mu0)
    seq = kalman_filter(model, mu0, Sigma0, y, jitter=0.0)
    par = kalman_filter(model, mu0, Sigma0, y, jitter=0.0, method="parallel")
    np.testing.assert_allclose(par.loglik, seq.loglik, rtol=1e-8)
    scale = 1.0 + mean
    for name in ("mu", "Sigma", "gain", "innovation", "innovation_cov"):
        np.testing.assert_allclose(getattr(par, name), getattr(seq, name),
                                   atol=1e-9 * scale, err_msg=name)
    # And the independent NumPy filter.
    np.testing.assert_allclose(par.loglik, kalman_filter_numpy(model, mu0, Sigma0, y,
                                                                jitter=0.0)[0], rtol=1e-9)


# M > 6: the library Cholesky; N > 6: LAPACK solves in the scan's combine step.
@pytest.mark.parametrize("N,M", [(3, 8), (8, 2)])
def test_parallel_with_default_jitter_and_large_dimensions(rng, N, M):
    model = random_lss(rng, N=N, K=3, M=M, L=M)
    y = data(rng, model, 50, np.zeros(N))
    seq = kalman_filter(model, np.zeros(N), np.eye(N), y)
    par = kalman_filter(model, np.zeros(N), np.eye(N), y, method="parallel")
    np.testing.assert_allclose(par.loglik, seq.loglik, rtol=1e-10)


def test_parallel_gradient(rng):
    model = LSSModel(*map(jnp.asarray, random_lss(rng, N=3)))
    mu0, Sigma0 = jnp.array([5.0, -2.0, 1.0]), jnp.eye(3)
    y = jnp.asarray(data(rng, model, 12, mu0))

    def loglik(model, mu0, method):
        return kalman_filter(model, mu0, Sigma0, y, method=method).loglik

    par = jax.grad(loglik, argnums=(0, 1))(model, mu0, "parallel")
    seq = jax.grad(loglik, argnums=(0, 1))(model, mu0, "sequential")
    for a, b in zip(jax.tree.leaves(par), jax.tree.leaves(seq)):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)
    check_grads(lambda m, mu: loglik(m, mu, "parallel"), (model, mu0), order=1,
                modes=["rev"])


def test_unknown_method_is_refused(rng):
    model = random_lss(rng)
    with pytest.raises(ValueError, match="method must be one of"):
        kalman_filter(model, np.zeros(3), np.eye(3), np.zeros((4, 2)), method="fast")


def test_parallel_non_positive_definite_raises():
    model = LSSModel(0.5 * np.eye(2), np.eye(2), np.ones((3, 2)), np.zeros((3, 1)))
    with pytest.raises(ValueError, match="not positive definite"):
        kalman_filter(model, np.zeros(2), np.eye(2), np.ones((4, 3)), jitter=0.0,
                      method="parallel")
