r"""The Kalman smoother, from the filter's adjoint recursion.

:func:`smoother` runs the filter, then the backward recursion of
:mod:`lecture_utils.kalman.adjoint` with the jitter held fixed, and turns the
derivatives of the log-likelihood with respect to each predicted mean and
covariance into the moments of each state given all the data (the (r, N)
recursion of Bryson and Frazier, as in Durbin and Koopman 2012, sec. 4.4). It
never inverts a predicted covariance: singular state noise and exactly
observed states are fine. A backend: it takes checked inputs.
"""

from functools import partial

import jax
import jax.numpy as jnp

from lecture_utils.kalman import _linalg as sl
from lecture_utils.kalman._steps import noise_covariances
from lecture_utils.kalman.adjoint import backward
from lecture_utils.kalman.results import SmootherResult
from lecture_utils.kalman.sequential import forward

__all__ = ["smoother"]


def _posterior(m, P, r, W):
    """Moments of x ~ N(m, P) (N,), (N, N) given y, from r = d log p(y)/dm and W = d log p(y)/dP."""
    return m + P @ r, sl.symmetrize(P - P @ (jnp.outer(r, r) - 2.0 * W) @ P)


@partial(jax.jit, static_argnames="steady_state")
def smoother(model, mu0, Sigma0, y, jitter, steady_state=True) -> SmootherResult:
    """Smoothed moments of x_0..x_T, as :func:`~lecture_utils.kalman.kalman_smoother`."""
    jitter = jax.lax.stop_gradient(jitter)
    Sigma0 = sl.symmetrize(Sigma0)
    loglik, _, res = forward(model, mu0, Sigma0, y, jitter, steady_state)
    (lam0, Om0), path = backward(model, y, jitter, res, jitter_terms=False)
    Q, _ = noise_covariances(model)
    mu_hat = res.mu[:-1] @ model.A.T
    Sigma_hat = model.A @ res.Sigma[:-1] @ model.A.T + Q
    mu_s, Sigma_s = jax.vmap(_posterior)(mu_hat, Sigma_hat, path.mu_hat_bar, path.Sigma_hat_bar)
    mu_0s, Sigma_0s = _posterior(mu0, Sigma0, lam0, Om0)
    return SmootherResult(jnp.concatenate([mu_0s[None], mu_s]),
                          jnp.concatenate([Sigma_0s[None], Sigma_s]), loglik)
