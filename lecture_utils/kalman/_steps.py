r"""The Kalman filter's predict and update steps, shared by every filter in the package.

An observation ``y_t`` (M,) may have missing entries, marked NaN. Conditioning
on the observed entries only keeps every shape fixed (so the same compiled step
serves every pattern of missing data): with ``m_t`` the 0/1 indicator of the
observed entries and :math:`D = \operatorname{diag}(m_t)`,

.. math::

    G_t = D G, \qquad (R_t)_{ij} = R_{ij} \text{ if } i, j \text{ observed, else } \delta_{ij},
    \qquad y_t \to D y_t,

so a missing entry has innovation 0, innovation variance 1, no covariance with
the others and no gain, and adds exactly nothing to the log-likelihood. It is
formed as :math:`R_t = R \circ m_t m_t^\top + \operatorname{diag}(1 - m_t)`, so
the observed entries of :math:`R_t` are those of :math:`R` to the last bit (times
one, plus zero) and a tiny measurement variance keeps its precision; the form
:math:`D R D + I - D` would round :math:`R_{ii}` to a multiple of 2.2e-16.

Every argument may carry trailing batch axes, as in :mod:`._linalg` (a
(N, N, B) Sigma is B covariances), which :mod:`lecture_utils.kalman.batch`
uses; the single filters pass none. The library branch for M > 6 takes none.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import cho_solve, solve_triangular

from lecture_utils.kalman import _linalg as sl

__all__ = ["LOG_2PI", "Update", "condition_on", "masked", "noise_covariances", "observed",
           "positive_definite", "predict"]

LOG_2PI = float(np.log(2 * np.pi))


class Update(NamedTuple):
    """One update step: the filtered moments, and what the adjoint and the results need.

    Attributes:
        mu, Sigma: (N,), (N, N) filtered moments after conditioning on ``y_t``.
        gain: (N, M) ``K_t`` (zero columns for missing entries).
        innovation: (M,) ``nu_t`` (zero where missing).
        innovation_cov: (M, M) regularised ``S_t`` (identity rows/columns where missing).
        S_inv_nu: (M,) ``S_t^{-1} nu_t``.
        S_inv: (M, M) ``S_t^{-1}``.
        Sigma_hat_Gt: (N, M) ``Sigma_hat G_t'``.
        log_det_S: () ``log |S_t|``.
        loglik: () this step's log-density of the observed entries.
        ok: () False if ``S_t`` was not positive definite.
    """

    mu: jax.Array
    Sigma: jax.Array
    gain: jax.Array
    innovation: jax.Array
    innovation_cov: jax.Array
    S_inv_nu: jax.Array
    S_inv: jax.Array
    Sigma_hat_Gt: jax.Array
    log_det_S: jax.Array
    loglik: jax.Array
    ok: jax.Array


def noise_covariances(model):
    """``(Q, R) = (C C', H H')``, (N, N, *b) and (M, M, *b)."""
    return (sl.matmul(model.C, sl.transpose(model.C)),
            sl.matmul(model.H, sl.transpose(model.H)))


def observed(y_t):
    """0/1 indicator (M, *b) of the observed (non-NaN) entries of ``y_t``."""
    return (~jnp.isnan(y_t)).astype(y_t.dtype)


def masked(y_t, G, R):
    """The observed part of the model at one date: ``(m_t, D y_t, D G, R_t)``."""
    m = observed(y_t)
    # 1 - m is exactly 0 where observed: R_ii * 1 + 0 keeps every bit of R_ii.
    return m, jnp.where(m > 0, y_t, 0.0), G * m[:, None], R * sl.outer(m, m) + sl.diag_matrix(1 - m)


def predict(mu, Sigma, A, Q):
    """One-step-ahead mean (N,) and covariance (N, N) of the state."""
    return sl.matvec(A, mu), sl.matmul(sl.matmul(A, Sigma), sl.transpose(A)) + Q


def positive_definite(S):
    """Whether ``S`` (M, M) passes the Cholesky test of :func:`condition_on` (a () bool)."""
    if S.shape[0] <= sl.MAX_UNROLLED_M:
        return sl.cholesky(S)[1]
    return jnp.all(jnp.isfinite(jnp.linalg.cholesky(jax.lax.stop_gradient(S))))


def condition_on(mu_hat, Sigma_hat, y_t, G, R, jitter) -> Update:
    r"""Condition the prediction on the observed entries of ``y_t``.

    ``jitter`` is relative to the scale of each series: every observed
    diagonal entry of :math:`S_t` is multiplied by ``1 + jitter``, so that
    rescaling the data changes the log-likelihood by the Jacobian term only.
    ``S = L L^T`` is factored once; every solve below is triangular. For small
    M the factorisation and solves are unrolled into scalar operations
    (``_linalg``), which XLA fuses; the maths is the same.
    """
    M = y_t.shape[0]
    m, y_t, G, R = masked(y_t, G, R)
    Sigma_hat_Gt = sl.matmul(Sigma_hat, sl.transpose(G))  # (N, M)
    S = sl.symmetrize(sl.matmul(G, Sigma_hat_Gt) + R)
    S = S + jitter * sl.diag_matrix(m * sl.diagonal(S))
    nu = y_t - sl.matvec(G, mu_hat)
    if M <= sl.MAX_UNROLLED_M:
        L, ok = sl.cholesky(S)
        # K = Sigma_hat G' S^{-1}  <=>  K' = L^{-T} L^{-1} G Sigma_hat
        K_rows = sl.solve_lower_transpose(L, sl.solve_lower(L, list(sl.transpose(Sigma_hat_Gt))))
        K = jnp.stack(K_rows, axis=1)
        z = sl.solve_lower(L, list(nu))  # z'z = nu' S^{-1} nu
        S_inv_nu = jnp.stack(sl.solve_lower_transpose(L, z))
        quad = sum(z_i * z_i for z_i in z)
        log_det_S = 2.0 * sum(jnp.log(L[i][i]) for i in range(M))
        S_inv = sl.inverse_from_cholesky(L)
    else:
        # The library Cholesky returns NaN for an indefinite S, and its derivative
        # would too: factor a stand-in (the identity) there instead.
        ok = positive_definite(S)
        L = jnp.linalg.cholesky(jnp.where(ok, S, jnp.eye(M)))
        K = cho_solve((L, True), Sigma_hat_Gt.T).T
        z = solve_triangular(L, nu, lower=True)
        S_inv_nu = cho_solve((L, True), nu)
        quad = z @ z
        log_det_S = 2.0 * jnp.sum(jnp.log(jnp.diag(L)))
        S_inv = cho_solve((L, True), jnp.eye(M))
    loglik_t = -0.5 * (jnp.sum(m, axis=0) * LOG_2PI + log_det_S + quad)
    mu = mu_hat + sl.matvec(K, nu)
    Sigma = sl.symmetrize(Sigma_hat - sl.matmul(K, sl.transpose(Sigma_hat_Gt)))
    return Update(mu, Sigma, K, nu, S, S_inv_nu, S_inv, Sigma_hat_Gt, log_det_S, loglik_t, ok)
