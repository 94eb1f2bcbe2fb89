r"""The Kalman filter as a ``lax.scan``, and its log-likelihood with a hand-derived reverse rule.

A backend: every function here takes inputs already checked by
:mod:`lecture_utils.kalman._checks` (through the public entry points of
:mod:`lecture_utils.kalman.api`). The model is the one of
:class:`lecture_utils.lss.LSSModel`, in the lectures' notation:
:math:`x_0 \sim N(\mu_0, \Sigma_0)` and, for t = 0, ..., T-1,

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
The reverse rule of :func:`loglik` is the adjoint recursion of
:mod:`lecture_utils.kalman.adjoint`.

If some :math:`S_t` is not positive definite the log-likelihood is ``-inf``,
and from that step on the carry holds the last moments that succeeded: every
later step repeats the same finite arithmetic, so nothing overflows and the
derivatives (multiplied by zero) stay finite.
"""

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from lecture_utils.kalman import _linalg as sl
from lecture_utils.kalman._steps import LOG_2PI, condition_on, noise_covariances, predict
from lecture_utils.kalman.adjoint import gradients
from lecture_utils.kalman.results import KalmanResult
from lecture_utils.lss import LSSModel

__all__ = ["Residuals", "filter", "forward", "loglik"]


#: The covariance recursion counts as converged when one step moves no entry of the
#: filtered covariance by more than this many machine epsilons of its largest entry.
STEADY_STATE_ULPS = 8


def _steady_step(last, mu, y_t, A, G):
    """The mean recursion alone, with the gain and S_t of the last full step ``last``.

    Valid once the covariance recursion has converged and for a fully observed
    ``y_t``: then every covariance, gain and S_t repeats ``last``'s.
    """
    mu_hat = sl.matvec(A, mu)
    nu = y_t - sl.matvec(G, mu_hat)
    S_inv_nu = sl.matvec(last.S_inv, nu)
    loglik_t = -0.5 * (y_t.shape[0] * LOG_2PI + last.log_det_S + jnp.sum(nu * S_inv_nu))
    return last._replace(mu=mu_hat + sl.matvec(last.gain, nu), innovation=nu, S_inv_nu=S_inv_nu,
                         loglik=loglik_t, ok=jnp.array(True))


def _scan_filter(model, mu0, Sigma0, y, jitter, keep, steady_state):
    """Run the filter; ``keep(update)`` picks what each step stores.

    The log-likelihood is summed in the carry, so a caller that keeps nothing
    needs scratch memory that does not grow with T. With ``steady_state``,
    once a full step leaves the filtered covariance unchanged (to
    :data:`STEADY_STATE_ULPS` epsilons), later steps with fully observed data
    run the mean recursion alone (:func:`_steady_step`); a step with a missing
    entry runs in full, and the test starts again after it. Returns
    ``(loglik, ok, stored)``, with ``loglik`` ``-inf`` where ``ok`` is False.
    """
    Q, R = noise_covariances(model)
    A, G = model.A, model.G
    tol = STEADY_STATE_ULPS * jnp.finfo(jnp.float64).eps

    def full_step(last, mu, Sigma, y_t):
        """The full step; converged if it left Sigma unchanged with every entry observed
        (its gain and S_t are then those of every later fully observed step)."""
        update = condition_on(*predict(mu, Sigma, A, Q), y_t, G, R, jitter)
        moved = jnp.max(jnp.abs(update.Sigma - Sigma))
        converged = moved <= tol * jnp.max(jnp.abs(update.Sigma))
        return update, converged & jnp.all(~jnp.isnan(y_t))

    def steady(last, mu, Sigma, y_t):
        return _steady_step(last, mu, y_t, A, G), jnp.array(True)

    def step(carry, y_t):
        """carry = (mu_t, Sigma_t, log-likelihood of y[:t], every S so far positive definite,
        the last step's update, whether the covariance has converged)."""
        mu, Sigma, loglik, ok, last, converged = carry
        if steady_state:
            use_steady = converged & jnp.all(~jnp.isnan(y_t))
            update, converged = lax.cond(use_steady, steady, full_step, last, mu, Sigma, y_t)
        else:
            update, converged = full_step(last, mu, Sigma, y_t)
        ok = ok & update.ok
        update = update._replace(mu=jnp.where(ok, update.mu, mu),
                                 Sigma=jnp.where(ok, update.Sigma, Sigma))
        carry = (update.mu, update.Sigma, loglik + update.loglik, ok, update, converged & ok)
        return carry, keep(update)

    Sigma0 = sl.symmetrize(Sigma0)
    # A stand-in for "the last update" before the first step (never read: not converged).
    first = jax.eval_shape(condition_on, *predict(mu0, Sigma0, A, Q), y[0] if len(y) else
                           jnp.zeros(y.shape[1:]), G, R, jitter)
    blank = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), first)
    init = (mu0, Sigma0, jnp.zeros(()), jnp.array(True), blank, jnp.array(False))
    (_, _, loglik, ok, _, _), stored = lax.scan(step, init, y)
    return jnp.where(ok, loglik, -jnp.inf), ok, stored


def _with_prior(first, rest):
    return jnp.concatenate([first[None], rest])


@partial(jax.jit, static_argnames="steady_state")
def filter(model, mu0, Sigma0, y, jitter, steady_state=True) -> KalmanResult:  # noqa: A001
    """The filter's log-likelihood and path, as :func:`~lecture_utils.kalman.kalman_filter`.

    ``jitter`` is a numerical setting, not a parameter: its derivative is zero.
    """
    jitter = lax.stop_gradient(jitter)

    def keep(u):
        return u.mu, u.Sigma, u.gain, u.innovation, u.innovation_cov

    loglik, _, (mu, Sigma, K, nu, S) = _scan_filter(model, mu0, Sigma0, y, jitter, keep,
                                                     steady_state)
    return KalmanResult(loglik, _with_prior(mu0, mu), _with_prior(sl.symmetrize(Sigma0), Sigma),
                        K, nu, S)


class Residuals(NamedTuple):
    """What the reverse rule and the smoother read back: the filtered path and the gain terms."""

    mu: jax.Array  # (T + 1, N)
    Sigma: jax.Array  # (T + 1, N, N)
    gain: jax.Array  # (T, N, M)
    S_inv_nu: jax.Array  # (T, M)
    S_inv: jax.Array  # (T, M, M)
    Sigma_hat_Gt: jax.Array  # (T, N, M)


def forward(model, mu0, Sigma0, y, jitter, steady_state=True):
    """The filter, keeping the :class:`Residuals`; returns ``(loglik, ok, residuals)``."""
    def keep(u):
        return u.mu, u.Sigma, u.gain, u.S_inv_nu, u.S_inv, u.Sigma_hat_Gt

    loglik, ok, (mu, Sigma, *rest) = _scan_filter(model, mu0, Sigma0, y, jitter, keep,
                                                   steady_state)
    return loglik, ok, Residuals(_with_prior(mu0, mu), _with_prior(sl.symmetrize(Sigma0), Sigma),
                                 *rest)


@partial(jax.custom_vjp, nondiff_argnums=(5,))
def _loglik(model, mu0, Sigma0, y, jitter, steady_state):
    return _scan_filter(model, mu0, Sigma0, y, jitter, lambda u: None, steady_state)[0]


def _loglik_fwd(model, mu0, Sigma0, y, jitter, steady_state):
    loglik, ok, res = forward(model, mu0, Sigma0, y, jitter, steady_state)
    return loglik, (model, y, jitter, ok, res)


def _loglik_bwd(steady_state, saved, g):
    model, y, jitter, ok, res = saved
    (mu0_bar, Sigma0_bar), (A_bar, Q_bar, G_bar, R_bar, y_bar) = gradients(model, y, jitter, res)
    model_bar = LSSModel(A_bar, 2.0 * sl.matmul(Q_bar, model.C), G_bar,
                         2.0 * sl.matmul(R_bar, model.H))
    # Where the log-likelihood is -inf it is locally constant: the gradient is 0.
    scale = jnp.where(ok, g, 0.0)
    grads = jax.tree.map(lambda x: jnp.where(ok, scale * x, 0.0),
                         (model_bar, mu0_bar, Sigma0_bar, y_bar))
    return (*grads, jnp.zeros_like(jitter))


_loglik.defvjp(_loglik_fwd, _loglik_bwd)


@partial(jax.jit, static_argnames="steady_state")
def loglik(model, mu0, Sigma0, y, jitter, steady_state=True):
    """The log-likelihood alone, with the adjoint as its reverse rule (zero for ``jitter``).

    The reverse rule runs the full filter's adjoint on the stored residuals;
    over a steady-state stretch those repeat the converged covariance and
    gain, which equal the full filter's to rounding, so the gradient is the
    full filter's either way.
    """
    return _loglik(model, mu0, sl.symmetrize(Sigma0), y, jnp.asarray(jitter, dtype=jnp.float64),
                   steady_state)
