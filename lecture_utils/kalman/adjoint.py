r"""The adjoint of the Kalman filter: the backward recursion, then the parameter gradients.

With :math:`\lambda_t, \Omega_t` the derivatives of the log-likelihood with
respect to :math:`\mu_{t+1}, \Sigma_{t+1}` (held as inputs of the later
steps), :math:`u_t = S_t^{-1}\nu_t`, :math:`F_t = I - K_t G` and
:math:`Z_t = \tfrac12 (u_t u_t^\top - S_t^{-1})`, one step back is

.. math::

    \bar\mu_t = F_t^\top \lambda_t + G^\top u_t, \qquad
    \bar\Sigma_t = F_t^\top \Omega_t F_t + \operatorname{sym}(F_t^\top \lambda_t u_t^\top G)
                   + G^\top Z_t G,

    \lambda_{t-1} = A^\top \bar\mu_t, \qquad \Omega_{t-1} = A^\top \bar\Sigma_t A,

where :math:`\bar\mu_t, \bar\Sigma_t` are the derivatives with respect to the
*predicted* moments :math:`\hat\mu_t, \hat\Sigma_t`. Only this recursion is
sequential (:func:`backward`); the derivatives with respect to A, CC', G, HH'
and y are sums over t of terms that need its outputs, computed afterwards for
all t at once as contractions over the time axis (:func:`parameter_gradients`).

The same recursion gives the smoother (:mod:`lecture_utils.kalman.smoother`):
for a Gaussian prior :math:`N(\hat\mu, \hat\Sigma)`,
:math:`E[x \mid y] = \hat\mu + \hat\Sigma \bar\mu` and
:math:`\operatorname{Cov}[x \mid y] = \hat\Sigma - \hat\Sigma (\bar\mu \bar\mu^\top
- 2 \bar\Sigma) \hat\Sigma`: the (r, N) recursion of Bryson and Frazier, in the
form of Durbin and Koopman (2012, sec. 4.4), with :math:`r = \bar\mu` and
:math:`N = \bar\mu\bar\mu^\top - 2\bar\Sigma`.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from lecture_utils.kalman import _linalg as sl
from lecture_utils.kalman._steps import masked, noise_covariances, observed

__all__ = ["AdjointPath", "backward", "parameter_gradients"]


class AdjointPath(NamedTuple):
    """The backward recursion's outputs at every step t = 0..T-1 (time leading).

    Attributes:
        lam, Om: (T, N), (T, N, N) derivatives w.r.t. the filtered ``mu_{t+1}, Sigma_{t+1}``.
        mu_hat_bar, Sigma_hat_bar: (T, N), (T, N, N) derivatives w.r.t. the
            predicted ``mu_hat_t, Sigma_hat_t``.
    """

    lam: jax.Array
    Om: jax.Array
    mu_hat_bar: jax.Array
    Sigma_hat_bar: jax.Array


def backward(model, y, jitter, res, *, jitter_terms):
    r"""Run the adjoint backwards in time, with a unit cotangent on the log-likelihood.

    Args:
        model: the checked ``LSSModel``; ``y`` (T, M) the data (NaN missing).
        res: the filter's :class:`~lecture_utils.kalman.sequential.Residuals`.
        jitter_terms: include the dependence of the relative jitter on
            :math:`\hat\Sigma_t` (through diag(S_t)), as the gradient must.
            The smoother passes False: there the jitter is held fixed at the
            value the filter added to each S_t, a known addition to HH', so
            that the smoothed moments are those of the model the filter
            conditioned on.

    Returns:
        ``((lambda_0, Omega_0), path)``: the derivatives w.r.t. ``mu0``
        (N,) and ``Sigma0`` (N, N), and an :class:`AdjointPath`.
    """
    A, _, G, _ = model
    _, R = noise_covariances(model)
    N = A.shape[0]
    At = sl.transpose(A)

    def step(carry, inputs):
        """carry = (lambda_t, Omega_t), the derivatives w.r.t. mu_{t+1}, Sigma_{t+1}."""
        lam, Om = carry
        K, u, S_inv, y_t = inputs
        mask, _, G_t, _ = masked(y_t, G, R)
        Kt = sl.transpose(K)
        Z = 0.5 * (sl.outer(u, u) - S_inv)
        if jitter_terms:  # the relative jitter depends on Sigma_hat through diag(S_t)
            Kt_lam = sl.matvec(Kt, lam)
            R_eff_bar = Z + sl.matmul(Kt, sl.matmul(Om, K)) - sl.symmetrize(sl.outer(Kt_lam, u))
            Z = Z + jitter * sl.diag_matrix(mask * sl.diagonal(R_eff_bar))
        F = jnp.eye(N) - sl.matmul(K, G_t)
        Ft = sl.transpose(F)
        Ft_lam, Gt_u = sl.matvec(Ft, lam), sl.matvec(sl.transpose(G_t), u)
        mu_hat_bar = Ft_lam + Gt_u
        Sigma_hat_bar = (sl.matmul(sl.matmul(Ft, Om), F) + sl.symmetrize(sl.outer(Ft_lam, Gt_u))
                         + sl.matmul(sl.matmul(sl.transpose(G_t), Z), G_t))
        carry = sl.matvec(At, mu_hat_bar), sl.matmul(sl.matmul(At, Sigma_hat_bar), A)
        return carry, AdjointPath(lam, Om, mu_hat_bar, Sigma_hat_bar)

    init = (jnp.zeros_like(res.mu[0]), jnp.zeros_like(res.Sigma[0]))
    first, path = lax.scan(step, init, (res.gain, res.S_inv_nu, res.S_inv, y), reverse=True)
    return first, path


def parameter_gradients(model, y, jitter, res, path: AdjointPath):
    """The derivatives of the log-likelihood w.r.t. A, Q = CC', G, R = HH' and y.

    Each is a sum over t of products of the filter's residuals and the
    adjoint path, written as contractions over the time axis (a few large
    products instead of T small ones).

    Returns:
        ``(A_bar (N, N), Q_bar (N, N), G_bar (M, N), R_bar (M, M), y_bar (T, M))``;
        ``y_bar`` is zero where ``y`` is missing.
    """
    A = model.A
    lam, Om, mu_hat_bar, Sigma_hat_bar = path
    m_t, P_t, m_next, P_next = res.mu[:-1], res.Sigma[:-1], res.mu[1:], res.Sigma[1:]
    K, u, S_inv, PGt = res.gain, res.S_inv_nu, res.S_inv, res.Sigma_hat_Gt
    mask = observed(y)  # (T, M)
    Kt_lam = jnp.einsum("tnm,tn->tm", K, lam)
    Om_K = jnp.einsum("tij,tjm->tim", Om, K)
    R_eff_bar = (0.5 * (u[:, :, None] * u[:, None, :] - S_inv) + jnp.einsum("tnm,tnk->tmk", K, Om_K)
                 - 0.5 * (Kt_lam[:, :, None] * u[:, None, :] + u[:, :, None] * Kt_lam[:, None, :]))
    e = jitter * mask * jnp.diagonal(R_eff_bar, axis1=1, axis2=2)  # the diagonal of E_t
    A_bar = (jnp.einsum("ti,tj->ij", mu_hat_bar, m_t)
             + 2.0 * jnp.einsum("tij,jk,tkl->il", Sigma_hat_bar, A, P_t))
    G_bar = (jnp.einsum("tm,tn->mn", mask * (u - Kt_lam), m_next)
             + jnp.einsum("tm,tn->mn", mask * u, jnp.einsum("tnk,tk->tn", P_next, lam))
             - jnp.einsum("tm,tnm->mn", mask, K)
             - 2.0 * jnp.einsum("tm,tnm,tnk->mk", mask, Om_K, P_next)
             + 2.0 * jnp.einsum("tm,tnm->mn", e, PGt))
    R_bar = jnp.einsum("tm,tk,tmk->mk", mask, mask, R_eff_bar) + jnp.diag(e.sum(0))
    return A_bar, Sigma_hat_bar.sum(0), G_bar, R_bar, mask * (Kt_lam - u)
