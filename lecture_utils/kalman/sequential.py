r"""The Kalman filter as a ``lax.scan``, its log-likelihood with a hand-derived reverse rule, and the smoother.

The model is the one of :class:`lecture_utils.simulation.LSSModel`, in the
lectures' notation: :math:`x_0 \sim N(\mu_0, \Sigma_0)` and, for t = 0, ..., T-1,

.. math::

    x_{t+1} = A x_t + C w_{t+1}, \qquad y_t = G x_{t+1} + H v_{t+1},

so row ``y[t]`` of the data observes :math:`x_{t+1}`. Starting from
:math:`\mu_0, \Sigma_0`, step t predicts, then conditions on ``y[t]``:

.. math::

    \hat\mu_t = A \mu_t, \quad \hat\Sigma_t = A \Sigma_t A^\top + C C^\top,
    \quad \nu_t = y_t - G \hat\mu_t, \quad S_t = G \hat\Sigma_t G^\top + H H^\top,

    K_t = \hat\Sigma_t G^\top S_t^{-1}, \quad \mu_{t+1} = \hat\mu_t + K_t \nu_t,
    \quad \Sigma_{t+1} = \hat\Sigma_t - K_t G \hat\Sigma_t,

and the log-likelihood is
:math:`\sum_t -\tfrac12 (M \log 2\pi + \log|S_t| + \nu_t^\top S_t^{-1} \nu_t)`.
Missing entries of ``y[t]`` (NaN) are handled as in :mod:`lecture_utils.kalman._steps`.

The reverse rule of :func:`kalman_loglik` runs the filter's adjoint backwards
in time. With :math:`\lambda_t, \Omega_t` the derivatives of the
log-likelihood with respect to :math:`\mu_{t+1}, \Sigma_{t+1}` (held as inputs
of the later steps), :math:`u_t = S_t^{-1}\nu_t`, :math:`F_t = I - K_t G` and
:math:`Z_t = \tfrac12 (u_t u_t^\top - S_t^{-1})`, one step back is

.. math::

    \bar\mu_t = F_t^\top \lambda_t + G^\top u_t, \qquad
    \bar\Sigma_t = F_t^\top \Omega_t F_t + \operatorname{sym}(F_t^\top \lambda_t u_t^\top G)
                   + G^\top Z_t G,

    \lambda_{t-1} = A^\top \bar\mu_t, \qquad \Omega_{t-1} = A^\top \bar\Sigma_t A,

where :math:`\bar\mu_t, \bar\Sigma_t` are the derivatives with respect to the
*predicted* moments :math:`\hat\mu_t, \hat\Sigma_t`; the derivatives with
respect to A, C, G, H and y accumulate along the way. The same recursion gives
the smoother: for a Gaussian prior :math:`N(\hat\mu, \hat\Sigma)`,
:math:`E[x \mid y] = \hat\mu + \hat\Sigma \bar\mu` and
:math:`\operatorname{Cov}[x \mid y] = \hat\Sigma - \hat\Sigma (\bar\mu \bar\mu^\top
- 2 \bar\Sigma) \hat\Sigma`.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from lecture_utils.kalman import _linalg as sl
from lecture_utils._validation import is_concrete
from lecture_utils.kalman._checks import check_inputs
from lecture_utils.kalman._steps import condition_on, masked, observed, predict, symmetrize
from lecture_utils.kalman.parallel import check_parallel_model, kalman_filter_parallel
from lecture_utils.simulation import LSSModel


class KalmanResult(NamedTuple):
    """Output of :func:`kalman_filter`.

    Attributes:
        loglik: () log-likelihood of all observed entries; ``-inf`` if some
            innovation covariance was not positive definite.
        mu: (T + 1, N) filtered means, ``mu[0] = mu0``.
        Sigma: (T + 1, N, N) filtered covariances, ``Sigma[0] = Sigma0``.
        gain: (T, N, M) Kalman gains ``K_t`` (zero columns for missing entries).
        innovation: (T, M) innovations ``nu_t = y[t] - G A mu[t]`` (0 where missing).
        innovation_cov: (T, M, M) innovation covariances ``S_t`` (identity
            rows and columns where missing).
    """

    loglik: jax.Array
    mu: jax.Array
    Sigma: jax.Array
    gain: jax.Array
    innovation: jax.Array
    innovation_cov: jax.Array


class SmootherResult(NamedTuple):
    """Output of :func:`kalman_smoother`.

    Attributes:
        mu: (T + 1, N) smoothed means ``E[x_t | y]``; row 0 is ``x_0``.
        Sigma: (T + 1, N, N) smoothed covariances ``Cov[x_t | y]``.
        loglik: () log-likelihood, as :func:`kalman_loglik`.
    """

    mu: jax.Array
    Sigma: jax.Array
    loglik: jax.Array


def _noise_covariances(model):
    return (sl.matmul(model.C, sl.transpose(model.C)),
            sl.matmul(model.H, sl.transpose(model.H)))


def _scan_filter(model, mu0, Sigma0, y, jitter, keep):
    """Run the filter; ``keep(update)`` picks what each step stores.

    The log-likelihood is summed in the carry, so a caller that keeps nothing
    needs scratch memory that does not grow with T. Returns
    ``(loglik, ok, stored)``, with ``loglik`` ``-inf`` where ``ok`` is False.
    """
    Q, R = _noise_covariances(model)

    def step(carry, y_t):
        """carry = (mu_t, Sigma_t, log-likelihood of y[:t], all S so far positive definite)."""
        mu, Sigma, loglik, ok = carry
        mu_hat, Sigma_hat = predict(mu, Sigma, model.A, Q)
        update = condition_on(mu_hat, Sigma_hat, y_t, model.G, R, jitter)
        return (update.mu, update.Sigma, loglik + update.loglik, ok & update.ok), keep(update)

    init = (mu0, symmetrize(Sigma0), jnp.zeros(()), jnp.array(True))
    (_, _, loglik, ok), stored = lax.scan(step, init, y)
    return jnp.where(ok, loglik, -jnp.inf), ok, stored


def _with_prior(first, rest):
    return jnp.concatenate([first[None], rest])


@jax.jit
def _kalman_filter(model, mu0, Sigma0, y, jitter):
    def keep(u):
        return u.mu, u.Sigma, u.gain, u.innovation, u.innovation_cov

    loglik, _, (mu, Sigma, K, nu, S) = _scan_filter(model, mu0, Sigma0, y, jitter, keep)
    return KalmanResult(loglik, _with_prior(mu0, mu), _with_prior(symmetrize(Sigma0), Sigma),
                        K, nu, S)


class _Residuals(NamedTuple):
    """What the reverse rule reads back: the filtered path and each step's gain terms."""

    mu: jax.Array  # (T + 1, N)
    Sigma: jax.Array  # (T + 1, N, N)
    gain: jax.Array  # (T, N, M)
    S_inv_nu: jax.Array  # (T, M)
    S_inv: jax.Array  # (T, M, M)
    Sigma_hat_Gt: jax.Array  # (T, N, M)


def _forward(model, mu0, Sigma0, y, jitter):
    def keep(u):
        return u.mu, u.Sigma, u.gain, u.S_inv_nu, u.S_inv, u.Sigma_hat_Gt

    loglik, ok, (mu, Sigma, *rest) = _scan_filter(model, mu0, Sigma0, y, jitter, keep)
    return loglik, ok, _Residuals(_with_prior(mu0, mu), _with_prior(symmetrize(Sigma0), Sigma),
                                  *rest)


def _outer(a, b):
    return a[:, None] * b[None, :]


def _adjoint(model, y, jitter, res, *, gradients):
    """Run the adjoint of the filter backwards in time, with a unit cotangent on the log-likelihood.

    Only the recursion for (lambda_t, Omega_t) is sequential; the derivatives
    w.r.t. A, C'C, G, HH' and y are sums over t of terms that need that
    recursion's outputs, computed afterwards for all t at once.

    Returns ``(lambda_0, Omega_0)`` (derivatives w.r.t. ``mu0`` and ``Sigma0``),
    the derivatives w.r.t. the predicted moments at every step, and, if
    ``gradients``, ``(A_bar, Q_bar, G_bar, R_bar, y_bar)``. Without
    ``gradients`` (the smoother), the jitter is held fixed at the value the
    filter added to each ``S_t``, as a known addition to ``HH'``, so that the
    smoothed moments are those of the model the filter conditioned on.
    """
    A, _, G, _ = model
    Q, R = _noise_covariances(model)
    N = A.shape[0]
    At = sl.transpose(A)

    def step(carry, inputs):
        """carry = (lambda_t, Omega_t), the derivatives w.r.t. mu_{t+1}, Sigma_{t+1}."""
        lam, Om = carry
        K, u, S_inv, y_t = inputs
        mask, _, G_t, _ = masked(y_t, G, R)
        Kt = sl.transpose(K)
        Z = 0.5 * (_outer(u, u) - S_inv)
        if gradients:  # the relative jitter depends on Sigma_hat through diag(S_t)
            Kt_lam = sl.matvec(Kt, lam)
            R_eff_bar = Z + sl.matmul(Kt, sl.matmul(Om, K)) - symmetrize(_outer(Kt_lam, u))
            Z = Z + jitter * jnp.diag(mask * jnp.diag(R_eff_bar))
        F = jnp.eye(N) - sl.matmul(K, G_t)
        Ft = sl.transpose(F)
        Ft_lam, Gt_u = sl.matvec(Ft, lam), sl.matvec(sl.transpose(G_t), u)
        mu_hat_bar = Ft_lam + Gt_u
        Sigma_hat_bar = (sl.matmul(sl.matmul(Ft, Om), F) + symmetrize(_outer(Ft_lam, Gt_u))
                         + sl.matmul(sl.matmul(sl.transpose(G_t), Z), G_t))
        carry = sl.matvec(At, mu_hat_bar), sl.matmul(sl.matmul(At, Sigma_hat_bar), A)
        return carry, (lam, Om, mu_hat_bar, Sigma_hat_bar)

    init = (jnp.zeros_like(res.mu[0]), jnp.zeros_like(res.Sigma[0]))
    (lam0, Om0), (lam, Om, mu_hat_bar, Sigma_hat_bar) = lax.scan(
        step, init, (res.gain, res.S_inv_nu, res.S_inv, y), reverse=True)
    if not gradients:
        return (lam0, Om0), (mu_hat_bar, Sigma_hat_bar), None

    # The sums over t, as contractions over the time axis (large products, not T small ones).
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
    sums = (A_bar, Sigma_hat_bar.sum(0), G_bar, R_bar, mask * (Kt_lam - u))
    return (lam0, Om0), (mu_hat_bar, Sigma_hat_bar), sums


@jax.custom_vjp
def _loglik(model, mu0, Sigma0, y, jitter):
    return _scan_filter(model, mu0, Sigma0, y, jitter, keep=lambda u: None)[0]


def _loglik_fwd(model, mu0, Sigma0, y, jitter):
    loglik, ok, res = _forward(model, mu0, Sigma0, y, jitter)
    return loglik, (model, y, jitter, ok, res)


def _loglik_bwd(saved, g):
    model, y, jitter, ok, res = saved
    (mu0_bar, Sigma0_bar), _, (A_bar, Q_bar, G_bar, R_bar, y_bar) = _adjoint(
        model, y, jitter, res, gradients=True)
    model_bar = LSSModel(A_bar, 2.0 * sl.matmul(Q_bar, model.C), G_bar,
                         2.0 * sl.matmul(R_bar, model.H))
    # Where the log-likelihood is -inf it is locally constant: the gradient is 0.
    scale = jnp.where(ok, g, 0.0)
    grads = jax.tree.map(lambda x: jnp.where(ok, scale * x, 0.0),
                         (model_bar, mu0_bar, Sigma0_bar, y_bar))
    return (*grads, jnp.zeros_like(jitter))


_loglik.defvjp(_loglik_fwd, _loglik_bwd)


@jax.jit
def _kalman_loglik(model, mu0, Sigma0, y, jitter):
    return _loglik(model, mu0, symmetrize(Sigma0), y, jnp.asarray(jitter, dtype=jnp.float64))


@jax.jit
def _kalman_smoother(model, mu0, Sigma0, y, jitter):
    Sigma0 = symmetrize(Sigma0)
    loglik, _, res = _forward(model, mu0, Sigma0, y, jitter)
    (lam0, Om0), (r, W), _ = _adjoint(model, y, jitter, res, gradients=False)
    Q, _ = _noise_covariances(model)
    mu_hat = res.mu[:-1] @ model.A.T
    Sigma_hat = model.A @ res.Sigma[:-1] @ model.A.T + Q

    def smooth(m, P, r, W):
        """Posterior moments of a N(m, P) prior from the log-likelihood's derivatives r, W."""
        return m + P @ r, symmetrize(P - P @ (jnp.outer(r, r) - 2.0 * W) @ P)

    mu_s, Sigma_s = jax.vmap(smooth)(mu_hat, Sigma_hat, r, W)
    mu_0s, Sigma_0s = smooth(mu0, Sigma0, lam0, Om0)
    return SmootherResult(_with_prior(mu_0s, mu_s), _with_prior(Sigma_0s, Sigma_s), loglik)


def _raise_if_failed(loglik, jitter):
    if np.isneginf(np.asarray(loglik)):
        raise ValueError(
            "the innovation covariance S_t = G Sigma_hat G' + H H' is not positive definite "
            f"at some t (jitter = {jitter}); check H and C, or raise jitter")


METHODS = ("sequential", "parallel")


def kalman_filter(model: LSSModel, mu0, Sigma0, y, *, jitter: float = 1e-8,
                  method: str = "sequential") -> KalmanResult:
    """Run the Kalman filter and return the log-likelihood and filtered moments.

    Args:
        model: ``LSSModel`` with A (N, N), C (N, K), G (M, N), H (M, L).
        mu0: (N,) prior mean of ``x_0``.
        Sigma0: (N, N) prior covariance of ``x_0`` (symmetrised).
        y: (T, M) observations; ``y[t]`` observes ``x_{t+1}``; NaN marks an
            entry that was not observed.
        jitter: relative regularisation: each observed diagonal entry of
            ``S_t`` is multiplied by ``1 + jitter`` before its Cholesky
            factorisation (rescaling a series does not change its effect);
            pass 0.0 for the exact filter.
        method: ``"sequential"``, a ``lax.scan`` over t; or ``"parallel"``,
            the associative scan of :mod:`lecture_utils.kalman.parallel`
            (span O(log T) on an accelerator; slower on a CPU). Same results
            for ``jitter=0``; it needs ``G CC' G' + HH'`` positive definite.

    Returns:
        A :class:`KalmanResult`.

    Raises:
        ValueError: on wrong shapes; on NaN or infinite entries of the model,
            ``mu0`` or ``Sigma0``, infinite entries of ``y``, or a ``Sigma0``
            that is not symmetric positive semi-definite (checked when the
            inputs are concrete); and when some ``S_t`` is not positive
            definite. Under ``jit``/``grad``/``vmap`` values cannot be
            inspected: there a non-positive-definite ``S_t`` gives
            ``loglik = -inf`` with a finite gradient, never NaN.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    model, mu0, Sigma0, y, _ = check_inputs(model, mu0, Sigma0, y)
    if method == "parallel" and y.shape[0] > 0:
        if is_concrete(model):
            check_parallel_model(model)
        result = KalmanResult(*kalman_filter_parallel(model, mu0, Sigma0, y, jitter))
    else:
        result = _kalman_filter(model, mu0, Sigma0, y, jitter)
    if is_concrete(result.loglik):
        _raise_if_failed(result.loglik, jitter)
    return result


def kalman_loglik(model: LSSModel, mu0, Sigma0, y, *, jitter: float = 1e-8) -> jax.Array:
    """The log-likelihood of :func:`kalman_filter`, with a hand-derived reverse rule.

    The value is computed without storing the path (scratch memory does not
    grow with T). Its gradient (``jax.grad``, ``jax.vjp``) runs the adjoint of
    the filter backwards in time (see the module docstring) instead of
    reading back autodiff's record of every operation: about the cost of a
    second filter. Reverse-over-reverse second derivatives
    (``jax.jacrev(jax.grad(f))``, ``jax.hessian`` ) differentiate that rule
    again; ``jax.jvp`` of the function itself is not defined (a
    ``jax.custom_vjp``).

    Args and Raises: as :func:`kalman_filter`.

    Returns:
        () log-likelihood; ``-inf`` with a zero gradient where some ``S_t`` is
        not positive definite under ``jit``/``grad``/``vmap``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> model = LSSModel(jnp.eye(1) * 0.9, jnp.eye(1), jnp.eye(1), jnp.eye(1))
        >>> y = jnp.array([[0.5], [jnp.nan], [-0.2]])
        >>> ll = kalman_loglik(model, jnp.zeros(1), jnp.eye(1), y)
        >>> bool(jnp.isclose(ll, kalman_filter(model, jnp.zeros(1), jnp.eye(1), y).loglik))
        True
    """
    model, mu0, Sigma0, y, _ = check_inputs(model, mu0, Sigma0, y)
    loglik = _kalman_loglik(model, mu0, Sigma0, y, jitter)
    if is_concrete(loglik):
        _raise_if_failed(loglik, jitter)
    return loglik


def kalman_smoother(model: LSSModel, mu0, Sigma0, y, *, jitter: float = 1e-8) -> SmootherResult:
    """Moments of every state given all observations (Rauch-Tung-Striebel).

    Computed from the adjoint recursion of :func:`kalman_loglik` (the
    derivatives of the log-likelihood with respect to each predicted mean and
    covariance), which never inverts a predicted covariance: singular state
    noise and exactly observed states are fine. Differentiable.

    Args and Raises: as :func:`kalman_filter`.

    Returns:
        A :class:`SmootherResult`; row 0 is ``x_0``, the last row equals the
        filter's.
    """
    model, mu0, Sigma0, y, _ = check_inputs(model, mu0, Sigma0, y)
    result = _kalman_smoother(model, mu0, Sigma0, y, jitter)
    if is_concrete(result.loglik):
        _raise_if_failed(result.loglik, jitter)
    return result
