"""The steady-state switch: once the covariance has converged, only the mean recursion runs.

It must change nothing beyond rounding, in value, path and gradient, with and
without missing data, and it must really switch (later covariances repeat bit
for bit)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import SAME_STEPS_RTOL, as_jax, random_lss, simulate_data, with_missing

from lecture_utils.gradcheck import assert_trees_close_normwise
from lecture_utils.kalman import (kalman_filter, kalman_filter_numpy, kalman_loglik,
                                  kalman_smoother)

# Rounding of the switched steps against the full ones: the converged covariance
# and gain differ from the full recursion's by a few ulps, for every later step.
SWITCH_RTOL = 1e-10


def problem(seed, N=4, M=2, T=300, missing=False):
    rng = np.random.default_rng(seed)
    model = random_lss(rng, N=N, K=N, M=M, L=M)
    mu0, Sigma0 = rng.normal(size=N), np.eye(N)
    y = simulate_data(rng, model, T, mu0, Sigma0)
    if missing:
        y = with_missing(rng, y, 0.05, nan_rows=[T // 2], nan_col_rows=range(200, 210))
    return as_jax(model), jnp.asarray(mu0), jnp.asarray(Sigma0), jnp.asarray(y)


@pytest.mark.parametrize("missing", [False, True], ids=["complete", "missing"])
@pytest.mark.parametrize("seed", [1, 2])
def test_switch_changes_nothing_but_rounding(seed, missing):
    args = problem(seed, missing=missing)
    on = kalman_filter(*args, steady_state=True)
    off = kalman_filter(*args, steady_state=False)
    np.testing.assert_allclose(on.loglik, off.loglik, rtol=SWITCH_RTOL)
    for name in ("mu", "Sigma", "gain", "innovation", "innovation_cov"):
        np.testing.assert_allclose(getattr(on, name), getattr(off, name), rtol=SWITCH_RTOL,
                                   atol=SWITCH_RTOL * np.max(np.abs(getattr(off, name))),
                                   err_msg=name)
    # Both against the independent NumPy filter.
    np.testing.assert_allclose(on.loglik, kalman_filter_numpy(*args).loglik, rtol=1e-9)
    np.testing.assert_allclose(kalman_loglik(*args), off.loglik, rtol=SWITCH_RTOL)
    np.testing.assert_allclose(kalman_loglik(*args, steady_state=False), off.loglik,
                               rtol=SAME_STEPS_RTOL)


@pytest.mark.parametrize("missing", [False, True], ids=["complete", "missing"])
def test_gradient_with_the_switch_equals_the_full_filters(missing):
    args = problem(3, missing=missing)
    full = jax.grad(lambda *a: kalman_filter(*a, steady_state=False).loglik, argnums=(0, 1, 2, 3))
    want = jax.jit(full)(*args)
    for f in (lambda *a: kalman_loglik(*a, steady_state=True),
              lambda *a: kalman_filter(*a, steady_state=True).loglik):
        got = jax.jit(jax.grad(f, argnums=(0, 1, 2, 3)))(*args)
        assert_trees_close_normwise(got, want, rtol=SWITCH_RTOL)


def test_the_switch_engages_and_a_gap_interrupts_it():
    args = problem(4, missing=False)
    y = args[3].at[150].set(jnp.nan)
    Sigma = np.asarray(kalman_filter(*args[:3], y).Sigma)
    same = np.all(Sigma[1:] == Sigma[:-1], axis=(1, 2))  # row t + 1 repeats row t bit for bit
    assert same[100:150].all() and same[250:].all()  # converged: only the means move
    assert not same[150]  # the gap: uncertainty grows, the full step runs
    off = np.asarray(kalman_filter(*args[:3], y, steady_state=False).Sigma)
    assert not np.all(off[1:] == off[:-1], axis=(1, 2))[100:].all()  # rounding never settles


def test_smoother_with_the_switch_matches_the_full_one():
    args = problem(5, missing=True)
    on, off = kalman_smoother(*args), kalman_smoother(*args, steady_state=False)
    np.testing.assert_allclose(on.mu, off.mu, atol=SWITCH_RTOL * np.abs(off.mu).max())
    np.testing.assert_allclose(on.Sigma, off.Sigma, atol=SWITCH_RTOL * np.abs(off.Sigma).max())


def test_short_series_and_vmap():
    args = problem(6, T=3)  # never converges: the full steps only
    np.testing.assert_allclose(kalman_loglik(*args), kalman_loglik(*args, steady_state=False),
                               rtol=SAME_STEPS_RTOL)
    model, mu0, Sigma0, y = problem(7)
    ys = jnp.stack([y, y[::-1], 2.0 * y])
    got = jax.vmap(lambda y: kalman_loglik(model, mu0, Sigma0, y))(ys)
    want = [kalman_loglik(model, mu0, Sigma0, y_b, steady_state=False) for y_b in ys]
    np.testing.assert_allclose(got, want, rtol=SWITCH_RTOL)


def test_steady_state_must_be_a_bool():
    with pytest.raises(ValueError, match="steady_state"):
        kalman_loglik(*problem(8, T=5), steady_state="yes")


def test_a_gap_in_a_converged_stretch_is_not_taken_for_the_steady_state():
    """Sigma = 0 throughout (a noiseless state): every step 'converges', and the step after a
    gap must not reuse the gap's masked S_t = 1."""
    from lecture_utils.lss import LSSModel
    model = LSSModel(np.zeros((1, 1)), np.zeros((1, 1)), np.ones((1, 1)), 1e-4 * np.eye(1))
    y = 1e-4 * np.array([[0.3], [-1.2], [np.nan], [0.7], [0.1]])
    obs = y[~np.isnan(y)]
    want = np.sum(-0.5 * (np.log(2 * np.pi * 1e-8) + obs**2 / 1e-8))
    np.testing.assert_allclose(kalman_loglik(model, np.zeros(1), np.zeros((1, 1)), y, jitter=0.0),
                               want, rtol=1e-13)
