"""kalman_loglik: its value, and its hand-written reverse rule against JAX's own
derivative of the filter, finite differences and a NumPy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    ADJOINT_RTOL,
    INDEPENDENT_RTOL,
    SAME_STEPS_RTOL,
    accumulated,
    as_jax,
    random_direction,
    random_lss,
    simulate_data,
    stack_models,
    with_missing,
)
from jax.test_util import check_grads

from lecture_utils.gradcheck import assert_trees_close_normwise, central_difference, tree_dot
from lecture_utils.kalman import kalman_filter, kalman_filter_numpy, kalman_loglik
from lecture_utils.kalman.reference import dense_loglik
from lecture_utils.simulation import LSSModel


def problem(seed, N, K, M, L, T, mean, missing):
    """A random model, a prior with mean ``mean`` and data simulated from it (NaN if asked)."""
    rng = np.random.default_rng(seed)
    model = random_lss(rng, N=N, K=K, M=M, L=L)
    mu0 = mean + rng.normal(size=N)
    X = rng.normal(size=(N, N))
    Sigma0 = X @ X.T / N + 0.1 * np.eye(N)
    y = simulate_data(rng, model, T, mu0, Sigma0)
    if missing:
        y = with_missing(rng, y, 0.2, nan_rows=[T // 2], nan_col_rows=range(T // 3, T // 2))
    return as_jax(model), jnp.asarray(mu0), jnp.asarray(Sigma0), jnp.asarray(y)


def filter_loglik(model, mu0, Sigma0, y):
    return kalman_filter(model, mu0, Sigma0, y).loglik


def fast_loglik(model, mu0, Sigma0, y):
    return kalman_loglik(model, mu0, Sigma0, y)


GRAD = jax.jit(jax.grad(fast_loglik, argnums=(0, 1, 2, 3)))
GRAD_OF_FILTER = jax.jit(jax.grad(filter_loglik, argnums=(0, 1, 2, 3)))

#            N,  K, M, L, T,      mean, missing
CASES = [(1, 1, 1, 1, 1, 0.0, False),
         (3, 2, 2, 2, 25, 1e3, True),
         (4, 4, 3, 2, 25, 0.0, True),  # L < M: H H' singular, S_t still positive definite
         (32, 4, 8, 8, 6, 1e3, True),  # M > 6: the library Cholesky branch
         (2, 2, 1, 1, 10_000, 1e3, True)]  # a long series, once, at small N


@pytest.mark.parametrize("case", CASES, ids=lambda c: "N{}K{}M{}L{}T{}mean{:g}nan{}".format(*c))
def test_value_and_gradient_equal_jax_grad_of_the_filter(case):
    args = problem(1000 + CASES.index(case), *case)
    T = case[4]
    value = kalman_loglik(*args)
    assert value.shape == () and value.dtype == jnp.float64
    np.testing.assert_allclose(value, kalman_filter(*args).loglik,
                               rtol=accumulated(SAME_STEPS_RTOL, T))
    # The value against the NumPy reference (same relative jitter 1e-8).
    np.testing.assert_allclose(value, kalman_filter_numpy(*args, jitter=1e-8).loglik,
                               rtol=accumulated(INDEPENDENT_RTOL, T))
    # Norm-wise per input (A, C, G, H, mu0, Sigma0, y): ||g - g_ref|| <= rtol ||g_ref||.
    grads, want = GRAD(*args), GRAD_OF_FILTER(*args)
    assert_trees_close_normwise(grads, want, rtol=accumulated(ADJOINT_RTOL, T), err_msg=str(case))
    # y's entries that were not observed do not enter the likelihood.
    missing = np.isnan(np.asarray(args[3]))
    assert np.all(np.asarray(grads[3])[missing] == 0.0)


def symmetric_prior(f):
    """``f`` with Sigma0 replaced by its symmetric part, so that finite differences along
    an arbitrary direction stay within the symmetric priors the validator accepts."""
    return lambda model, mu0, Sigma0, y: f(model, mu0, 0.5 * (Sigma0 + Sigma0.T), y)


@pytest.mark.parametrize("missing", [False, True])
def test_gradient_against_finite_differences(missing):
    args = problem(7, 3, 2, 2, 2, 25, 0.0, missing)  # the shapes of CASES[1]
    f = symmetric_prior(fast_loglik)
    check_grads(f, args, order=1, modes=["rev"], eps=1e-5)
    # And along random directions, with the central difference written out.
    rng = np.random.default_rng(8)
    grads = jax.grad(f, argnums=(0, 1, 2, 3))(*args)
    for _ in range(3):
        d = random_direction(rng, args)
        fd = central_difference(f, args, d, eps=1e-6)
        np.testing.assert_allclose(tree_dot(grads, d), fd, rtol=1e-6, atol=1e-8)


def small_parameters():
    """A function of a 7-vector p that moves A, C, H, mu0 and Sigma0, and the point p = 0."""
    model, mu0, Sigma0, y = problem(9, 2, 2, 2, 2, 10, 0.0, True)
    E = jnp.zeros((2, 2)).at[0, 1].set(1.0)

    def f(p):
        m = LSSModel(model.A + p[0] * E, model.C * (1 + p[1]), model.G, model.H * (1 + p[2]))
        return kalman_loglik(m, mu0 + p[3:5], Sigma0 * (1 + p[5]) + p[6] * jnp.eye(2), y)

    return f, jnp.zeros(7)


def test_second_derivatives():
    f, p = small_parameters()
    # Reverse over reverse, against central differences of the gradient, column by column.
    hess = jax.jit(jax.jacrev(jax.grad(f)))(p)
    grad = jax.jit(jax.grad(f))
    eps = 1e-5
    fd = np.stack([(grad(p.at[i].add(eps)) - grad(p.at[i].add(-eps))) / (2 * eps)
                   for i in range(p.size)], axis=1)
    np.testing.assert_allclose(hess, fd, rtol=1e-5, atol=1e-6 * np.abs(fd).max())
    np.testing.assert_allclose(hess, hess.T, atol=1e-10 * np.abs(hess).max())
    # Measured with jax 0.10.2: forward over reverse (jax.hessian = jacfwd(jacrev)) also
    # works through the custom reverse rule; forward mode of the log-likelihood does not.
    assert_trees_close_normwise(jax.jit(jax.hessian(f))(p), hess, rtol=1e-9)
    with pytest.raises(TypeError, match="can't apply forward-mode autodiff"):
        jax.jacfwd(f)(p)
    with pytest.raises(TypeError, match="can't apply forward-mode autodiff"):
        jax.jvp(f, (p,), (jnp.ones_like(p),))


def test_vmap_of_gradient_over_models_equals_per_model_gradients():
    rng = np.random.default_rng(11)
    models = [random_lss(rng, N=3, K=2, M=2, L=2) for _ in range(4)]
    mu0, Sigma0 = jnp.asarray(rng.normal(size=3)), jnp.eye(3)
    y = jnp.asarray(with_missing(rng, simulate_data(rng, models[0], 25, mu0, Sigma0), 0.2))
    batched = jax.vmap(GRAD, in_axes=(0, None, None, None))(as_jax(stack_models(models)),
                                                             mu0, Sigma0, y)
    for b, m in enumerate(models):
        one = jax.tree.map(lambda x: x[b], batched)
        assert_trees_close_normwise(one, GRAD(as_jax(m), mu0, Sigma0, y), rtol=1e-12)
        assert_trees_close_normwise(one, GRAD_OF_FILTER(as_jax(m), mu0, Sigma0, y),
                                    rtol=ADJOINT_RTOL)


def test_jit_and_vmap_over_data_equal_the_dense_gaussian():
    rng = np.random.default_rng(12)
    model = random_lss(rng, N=2, K=2, M=2, L=2)
    mu0, Sigma0 = rng.normal(size=2), np.eye(2)
    ys = np.stack([with_missing(rng, simulate_data(rng, model, 8, mu0, Sigma0), 0.3)
                   for _ in range(3)])
    f = jax.jit(jax.vmap(lambda y: kalman_loglik(model, mu0, Sigma0, y, jitter=0.0)))
    got = f(jnp.asarray(ys))
    for b in range(3):
        np.testing.assert_allclose(got[b], dense_loglik(model, mu0, Sigma0, ys[b]),
                                   rtol=INDEPENDENT_RTOL)
