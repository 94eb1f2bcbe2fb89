"""Numbers that stay exact at every scale, failures that stay finite, settings that are checked.

Each test here failed before the fix it guards (issue 17, part 2):
1. the masked innovation covariance was formed as ``R + I - diag(m)``, which
   rounds ``R_ii`` to a multiple of 2.2e-16, so small measurement variances
   lost precision and the log-likelihood was not scale invariant;
2. a member whose prior is indefinite kept the filter running on substitute
   pivots until its covariance overflowed, and ``0 * inf`` made gradients NaN;
3. a negative or non-finite ``jitter`` was accepted, and its derivative was 0
   in ``kalman_loglik`` but not in ``kalman_filter``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import as_jax, random_lss, simulate_data, stack_models

from lecture_utils.kalman import (
    kalman_filter,
    kalman_filter_numpy,
    kalman_loglik,
    kalman_loglik_batch,
    kalman_loglik_sharded,
    kalman_smoother,
)
from lecture_utils.lss import LSSModel

SCALES = [1e-8, 1e-6, 1e-3, 1.0, 1e3, 1e8]


def _batched(f):
    return lambda model, mu0, Sigma0, y, **kw: f(stack_models([model, model]), mu0, Sigma0,
                                                 y, **kw)[0]


BACKENDS = {
    "sequential": lambda *a, **kw: kalman_filter(*a, **kw).loglik,
    "loglik": kalman_loglik,
    "parallel": lambda *a, **kw: kalman_filter(*a, method="parallel", **kw).loglik,
    "batch": _batched(kalman_loglik_batch),
}


@pytest.fixture(scope="module")
def unit_problem():
    """A model with small measurement noise (H ~ 1e-2), data of unit scale, some NaN."""
    rng = np.random.default_rng(17)
    model = random_lss(rng, N=3, K=3, M=2, L=2)
    model = model._replace(H=1e-2 * np.eye(2))
    mu0, Sigma0 = rng.normal(size=3), np.eye(3)
    y = simulate_data(rng, model, 40, mu0, Sigma0)
    y[[3, 17], 1] = np.nan
    return model, mu0, Sigma0, y


def _scaled(problem, c):
    """x -> c x: y, C, H, mu0 scale by c and Sigma0 by c^2; A and G are unchanged."""
    model, mu0, Sigma0, y = problem
    return LSSModel(model.A, c * model.C, model.G, c * model.H), c * mu0, c**2 * Sigma0, c * y


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("c", SCALES)
def test_loglik_is_exactly_scale_invariant(unit_problem, backend, c):
    """Rescaling by c shifts the log-likelihood by exactly -(number observed) log c."""
    f = BACKENDS[backend]
    n_obs = int(np.sum(~np.isnan(unit_problem[3])))
    base = f(*unit_problem, jitter=0.0)
    shift = n_obs * np.log(c)
    # Rounding: a few eps of the terms summed (|base| and |shift|), not of their difference.
    tol = 1e-12 * (abs(float(base)) + abs(shift) + unit_problem[3].size)
    np.testing.assert_allclose(f(*_scaled(unit_problem, c), jitter=0.0), base - shift,
                               rtol=0, atol=tol)


@pytest.mark.parametrize("c", [1e-6, 1e-8])
def test_small_scale_loglik_matches_numpy_reference(unit_problem, c):
    """At scale 1e-6 the old masking was 2.5e-3 nats off the NumPy filter; now rounding."""
    scaled = _scaled(unit_problem, c)
    want = kalman_filter_numpy(*scaled, jitter=0.0).loglik
    for name in ("sequential", "loglik", "parallel", "batch"):
        got = BACKENDS[name](*scaled, jitter=0.0)
        np.testing.assert_allclose(got, want, rtol=1e-11, err_msg=name)


def test_a_measurement_variance_of_1e_16_is_kept():
    """A series that is pure measurement error of variance 1e-16: S_t = R exactly.

    The closed form is the N(0, 1e-16) log density of each observation; the old
    masking computed (1e-16 + 1) - 1 = 0 and refused the model as singular.
    """
    model = LSSModel(np.zeros((1, 1)), np.zeros((1, 1)), np.ones((1, 1)), 1e-8 * np.eye(1))
    y = 1e-8 * np.array([[0.3], [-1.2], [np.nan], [0.7]])
    obs = y[~np.isnan(y)]
    want = np.sum(-0.5 * (np.log(2 * np.pi * 1e-16) + obs**2 / 1e-16))
    for name, f in BACKENDS.items():
        np.testing.assert_allclose(f(model, np.zeros(1), np.zeros((1, 1)), y, jitter=0.0),
                                   want, rtol=1e-13, err_msg=name)


# ----- an indefinite prior under jit: -inf with a zero gradient, never NaN ----------------

SCALAR = LSSModel(jnp.array([[0.9]]), jnp.array([[1.0]]), jnp.array([[1.0]]),
                  jnp.array([[0.5]]))
Y10 = jnp.asarray(np.random.default_rng(0).normal(size=(10, 1)))
BAD_PRIOR = jnp.array([[-100.0]])  # refused eagerly; reachable only under jit/grad/vmap


ENTRIES = {
    "filter": lambda m, S0: kalman_filter(m, jnp.zeros(1), S0, Y10).loglik,
    "parallel": lambda m, S0: kalman_filter(m, jnp.zeros(1), S0, Y10, method="parallel").loglik,
    "loglik": lambda m, S0: kalman_loglik(m, jnp.zeros(1), S0, Y10),
    "smoother": lambda m, S0: kalman_smoother(m, jnp.zeros(1), S0, Y10).loglik,
}


@pytest.mark.parametrize("entry", ENTRIES)
def test_indefinite_prior_gives_minus_inf_and_a_zero_gradient(entry):
    f = ENTRIES[entry]
    value, grads = jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(SCALAR, BAD_PRIOR)
    assert value == -jnp.inf
    for leaf in jax.tree.leaves(grads):
        assert np.all(leaf == 0.0), (entry, grads)


@pytest.mark.parametrize("batch", [kalman_loglik_batch, kalman_loglik_sharded],
                         ids=["batch", "sharded"])
def test_indefinite_prior_in_a_batch_leaves_the_others_and_their_gradients(batch):
    priors = jnp.array([[[1.0]], [[-100.0]], [[2.0]]])

    def total(m, S0):
        return jnp.sum(jnp.where(jnp.isfinite(ll := batch(m, jnp.zeros(1), S0, Y10)), ll, 0.0))

    models = stack_models([SCALAR] * 3)
    got = jax.jit(lambda m, S0: batch(m, jnp.zeros(1), S0, Y10))(models, priors)
    assert got[1] == -jnp.inf
    grads = jax.jit(jax.grad(total, argnums=(0, 1)))(models, priors)
    for leaf in jax.tree.leaves(grads):
        assert np.all(np.isfinite(leaf))
    assert np.all(grads[1][1] == 0.0)
    single = jax.jit(jax.value_and_grad(ENTRIES["loglik"], argnums=(0, 1)))
    for b in (0, 2):
        value, (g_model, g_prior) = single(SCALAR, priors[b])
        np.testing.assert_allclose(got[b], value, rtol=1e-12)
        np.testing.assert_allclose(grads[1][b], g_prior, rtol=1e-10)
        for mine, theirs in zip(jax.tree.map(lambda x: x[b], grads[0]), g_model):
            np.testing.assert_allclose(mine, theirs, rtol=1e-10, atol=1e-14)


def test_indefinite_prior_under_vmap_leaves_the_other_members():
    priors = jnp.array([[[1.0]], [[-100.0]]])
    f = jax.vmap(jax.value_and_grad(ENTRIES["filter"], argnums=1), in_axes=(None, 0))
    values, grads = jax.jit(f)(SCALAR, priors)
    assert values[1] == -jnp.inf and grads[1] == 0.0
    np.testing.assert_allclose(values[0], kalman_filter_numpy(SCALAR, np.zeros(1), np.eye(1), Y10,
                                                              jitter=1e-8).loglik, rtol=1e-12)
    assert np.isfinite(grads[0]) and grads[0] != 0.0


# ----- jitter: a checked setting with the same (zero) derivative everywhere ----------------


@pytest.fixture(scope="module")
def small_problem():
    rng = np.random.default_rng(4)
    model = as_jax(random_lss(rng, N=2, K=2, M=2, L=2))
    mu0, Sigma0 = jnp.zeros(2), jnp.eye(2)
    return model, mu0, Sigma0, jnp.asarray(simulate_data(rng, model, 6, mu0, Sigma0))


@pytest.mark.parametrize("entry", ["sequential", "loglik", "parallel", "batch", "smoother"])
@pytest.mark.parametrize("bad", [-0.3, np.nan, np.inf, [1e-8, 1e-8]])
def test_bad_jitter_is_refused_by_name(small_problem, entry, bad):
    f = {**BACKENDS, "smoother": lambda *a, **kw: kalman_smoother(*a, **kw).loglik}[entry]
    with pytest.raises(ValueError, match="jitter"):
        f(*small_problem, jitter=bad)


@pytest.mark.parametrize("entry", ["sequential", "loglik", "parallel", "batch"])
def test_jitter_has_a_zero_derivative_in_every_entry_point(small_problem, entry):
    f = BACKENDS[entry]
    d = jax.grad(lambda j: f(*small_problem, jitter=j))(1e-3)
    assert d == 0.0
    # ... while the value does depend on it: a setting, not a parameter.
    assert f(*small_problem, jitter=1e-3) != f(*small_problem, jitter=0.0)
