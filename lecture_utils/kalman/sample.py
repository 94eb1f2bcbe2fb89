r"""Joint draws of all states given the data: the simulation smoother of Durbin and Koopman.

A backend: :func:`sample` takes inputs checked by
:mod:`lecture_utils.kalman._checks` (through
:func:`lecture_utils.kalman.kalman_sample`). Write :math:`X = (x_0, \dots, x_T)`
and :math:`Y` for the observed entries of ``y``. Given Y, X is Gaussian with
mean :math:`E[X \mid Y]` and a covariance that does not depend on the values
of Y, only on which entries are observed. Durbin and Koopman (2002) draw
from it without forming that covariance:

1. draw a path :math:`X^+, Y^+` from the model itself (prior, state shocks
   and measurement shocks), and blank out the entries of :math:`Y^+` that
   are missing in ``y``;
2. return :math:`\tilde X = X^+ - E[X^+ \mid Y^+] + E[X \mid Y]`.

:math:`X^+ - E[X^+ \mid Y^+]` is independent of :math:`Y^+` with covariance
:math:`\operatorname{Cov}[X \mid Y]` (a property of Gaussian conditioning), so
:math:`\tilde X \sim N(E[X \mid Y], \operatorname{Cov}[X \mid Y])`, exactly for
``jitter = 0`` (a relative jitter moves both conditionings, and so the moments
of the draws, by about its own relative size). Only
smoothed *means* are needed, from the smoother of :mod:`.smoother`, which
never inverts a predicted covariance: singular state noise (fewer shocks than
states, an AR(2) companion state) and exactly observed states are fine.
"""

from functools import partial

import jax
import jax.numpy as jnp

from lecture_utils.kalman import _linalg as sl
from lecture_utils.kalman._checks import PSD_RTOL
from lecture_utils.kalman.smoother import smoother
from lecture_utils.simulation import simulate_lss

__all__ = ["prior_root", "sample"]


def prior_root(Sigma0):
    r"""A factor ``F`` (N, N) with ``F F' = Sigma0`` for a positive semi-definite ``Sigma0``.

    From the eigendecomposition :math:`\Sigma_0 = U \Lambda U^\top`,
    :math:`F = U \Lambda_+^{1/2}`, where :math:`\Lambda_+` sets to zero the
    eigenvalues at rounding level (below N machine epsilons of the largest,
    negative ones included): exact for a singular ``Sigma0``, where a Cholesky
    factor does not exist, and the draws stay in its range (the square root
    of a rounding eigenvalue of 1e-16 would add noise of relative size 1e-8
    outside it). Returns ``(F, ok)``, ``ok`` False where the smallest
    eigenvalue is below ``-PSD_RTOL`` times the largest entry (the
    validator's test, which traced inputs skip).
    """
    lam, U = jnp.linalg.eigh(Sigma0)
    ok = lam[0] >= -PSD_RTOL * jnp.max(jnp.abs(Sigma0))
    rounding = lam.shape[0] * jnp.finfo(lam.dtype).eps * jnp.max(jnp.abs(lam))
    keep = lam > rounding
    return U * jnp.where(keep, jnp.sqrt(jnp.where(keep, lam, 1.0)), 0.0), ok


def _simulate(model, x0, w, v):
    """One unconditional path: states (T + 1, N) from ``x0`` (N,), ``w`` (T, K), and
    observations (T, M) ``y[t] = G x_{t+1} + H v[t]`` from ``v`` (T, L)."""
    if w.shape[0] == 0:
        return x0[None], jnp.zeros((0, model.G.shape[0]))
    # simulate_lss observes x_t with v[t], t = 0..T: its row 0 (x_0's) is not data.
    v = jnp.concatenate([jnp.zeros((1, v.shape[1])), v])
    x, y = simulate_lss(model, x0, w, v)
    return x, y[1:]


@partial(jax.jit, static_argnames="num_samples")
def sample(key, model, mu0, Sigma0, y, jitter, num_samples):
    """``num_samples`` joint draws (num_samples, T + 1, N) of x_0..x_T given ``y``.

    Returns ``(draws, loglik)``: ``loglik`` () is the data's log-likelihood
    (``-inf`` where some ``S_t`` is not positive definite). Where it is
    ``-inf``, or ``Sigma0`` is not positive semi-definite, every draw is NaN.
    All draws are made in one batched pass (``vmap`` over the draws).
    """
    (T, _), (N, K), L = y.shape, model.C.shape, model.H.shape[1]
    Sigma0 = sl.symmetrize(Sigma0)
    root, prior_ok = prior_root(Sigma0)
    # One call to the generator for all the standard normals of all the draws.
    z = jax.random.normal(key, (num_samples, N + T * (K + L)))
    x0 = mu0 + z[:, :N] @ root.T
    w = z[:, N:N + T * K].reshape(num_samples, T, K)
    v = z[:, N + T * K:].reshape(num_samples, T, L)
    x_plus, y_plus = jax.vmap(_simulate, in_axes=(None, 0, 0, 0))(model, x0, w, v)
    y_plus = jnp.where(jnp.isnan(y), jnp.nan, y_plus)  # the data's pattern of missing entries

    # One smoother for the data and the S simulated series together: row 0 is y's. The
    # covariance recursion does not depend on the data, so vmap runs it once for all rows.
    # steady_state=False: under vmap its switch would run both branches.
    smoothed = jax.vmap(lambda y: smoother(model, mu0, Sigma0, y, jitter, steady_state=False))(
        jnp.concatenate([y[None], y_plus]))
    draws = smoothed.mu[0] + x_plus - smoothed.mu[1:]
    loglik = smoothed.loglik[0]
    ok = prior_ok & jnp.isfinite(loglik)
    return jnp.where(ok, draws, jnp.nan), loglik
