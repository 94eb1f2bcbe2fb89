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
and y are sums over t of terms that need its outputs, accumulated in the same
backward loop (:func:`gradients`): with XLA:CPU's small-loop setting
(:mod:`lecture_utils.xla_settings`) a loop whose working set is small runs as
one kernel, so the sums cost a few fused products per step.

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
from lecture_utils.kalman._steps import masked, noise_covariances

__all__ = ["AdjointPath", "backward", "gradients"]


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


def _back_one_step(lam, Om, K, u, S_inv, y_t, G, R, jitter, jitter_terms):
    """One step of the recursion: the derivatives w.r.t. the predicted moments at t.

    Returns ``(mu_hat_bar, Sigma_hat_bar, R_eff_bar, mask)``; ``R_eff_bar``
    (M, M) is the derivative w.r.t. the step's (regularised) noise covariance,
    None unless ``jitter_terms``.
    """
    N = K.shape[0]
    mask, _, G_t, _ = masked(y_t, G, R)
    Kt = sl.transpose(K)
    Z = 0.5 * (sl.outer(u, u) - S_inv)
    R_eff_bar = None
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
    return mu_hat_bar, Sigma_hat_bar, R_eff_bar, mask


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
    At = sl.transpose(A)

    def step(carry, inputs):
        """carry = (lambda_t, Omega_t), the derivatives w.r.t. mu_{t+1}, Sigma_{t+1}."""
        lam, Om = carry
        mu_hat_bar, Sigma_hat_bar, _, _ = _back_one_step(lam, Om, *inputs, G, R, jitter,
                                                          jitter_terms)
        carry = sl.matvec(At, mu_hat_bar), sl.matmul(sl.matmul(At, Sigma_hat_bar), A)
        return carry, AdjointPath(lam, Om, mu_hat_bar, Sigma_hat_bar)

    init = (jnp.zeros_like(res.mu[0]), jnp.zeros_like(res.Sigma[0]))
    first, path = lax.scan(step, init, (res.gain, res.S_inv_nu, res.S_inv, y), reverse=True)
    return first, path


def _step_gradients(lam, Om, mu_hat_bar, Sigma_hat_bar, R_eff_bar, mask, A, jitter, inputs):
    """Step t's terms of the derivatives w.r.t. A, Q, G, R, and y_t itself.

    ``inputs`` are the residuals of step t: the gain K (N, M), ``u = S^{-1} nu``
    (M,), the filtered moments before (``m, P``) and after (``m_next,
    P_next``) the step, and ``Sigma_hat G_t'`` (N, M).
    """
    K, u, m, P, m_next, P_next, PGt = inputs
    Kt_lam = sl.matvec(sl.transpose(K), lam)
    Om_K = sl.matmul(Om, K)
    e = jitter * mask * sl.diagonal(R_eff_bar)  # the diagonal of the jitter's own term
    A_bar = sl.outer(mu_hat_bar, m) + 2.0 * sl.matmul(sl.matmul(Sigma_hat_bar, A), P)
    G_bar = (sl.outer(mask * (u - Kt_lam), m_next) + sl.outer(mask * u, sl.matvec(P_next, lam))
             - mask[:, None] * sl.transpose(K)
             - 2.0 * mask[:, None] * sl.matmul(sl.transpose(Om_K), P_next)
             + 2.0 * e[:, None] * sl.transpose(PGt))
    R_bar = sl.outer(mask, mask) * R_eff_bar + sl.diag_matrix(e)
    return A_bar, Sigma_hat_bar, G_bar, R_bar, mask * (Kt_lam - u)


def gradients(model, y, jitter, res):
    """The derivatives of the log-likelihood, by one backward pass.

    The recursion of :func:`backward` (with the jitter's terms), and in the
    same loop the sums over t of each step's terms of the derivatives w.r.t.
    A, Q = CC', G and R = HH' (:func:`_step_gradients`), held in the carry:
    the loop stores only ``y_bar``, so its working set stays small.

    Returns:
        ``((mu0_bar (N,), Sigma0_bar (N, N)), (A_bar (N, N), Q_bar (N, N),
        G_bar (M, N), R_bar (M, M), y_bar (T, M)))``; ``y_bar`` is zero where
        ``y`` is missing.
    """
    A, _, G, _ = model
    _, R = noise_covariances(model)
    At = sl.transpose(A)

    def step(carry, inputs):
        """carry = (lambda_t, Omega_t, and the sums over the later steps of the four gradients)."""
        lam, Om, *sums = carry
        K, u, S_inv, y_t, *rest = inputs
        mu_hat_bar, Sigma_hat_bar, R_eff_bar, mask = _back_one_step(
            lam, Om, K, u, S_inv, y_t, G, R, jitter, jitter_terms=True)
        *terms, y_bar = _step_gradients(lam, Om, mu_hat_bar, Sigma_hat_bar, R_eff_bar, mask, A,
                                        jitter, (K, u, *rest))
        carry = (sl.matvec(At, mu_hat_bar), sl.matmul(sl.matmul(At, Sigma_hat_bar), A),
                 *(total + term for total, term in zip(sums, terms)))
        return carry, y_bar

    N, M = G.shape[1], G.shape[0]
    init = (jnp.zeros(N), jnp.zeros((N, N)), jnp.zeros((N, N)), jnp.zeros((N, N)),
            jnp.zeros((M, N)), jnp.zeros((M, M)))
    inputs = (res.gain, res.S_inv_nu, res.S_inv, y, res.mu[:-1], res.Sigma[:-1], res.mu[1:],
              res.Sigma[1:], res.Sigma_hat_Gt)
    (lam0, Om0, A_bar, Q_bar, G_bar, R_bar), y_bar = lax.scan(step, init, inputs, reverse=True)
    return (lam0, Om0), (A_bar, Q_bar, G_bar, R_bar, y_bar)
