"""Log-likelihood functions of the implementations a reader might use instead.

Every function takes the book's timing: ``x_0 ~ N(mu0, Sigma0)`` and ``y[t]``
observes ``x_{t+1}``. Peers whose first observation is of their initial state
(statsmodels, dynamax, filterpy) are given the predicted prior of ``x_1``.
"""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np

from lecture_utils.kalman.reference import statsmodels_kalman


def statsmodels_loglik(model, mu0, Sigma0, y, *, tolerance=0.0):
    """A callable running statsmodels' Cython filter: the package's one adapter.

    ``tolerance=0`` runs the exact filter throughout; statsmodels' default
    (1e-19) switches to the steady-state gain once the covariance has converged.
    """
    return statsmodels_kalman(model, mu0, Sigma0, y, tolerance=tolerance).loglike


def dynamax_params(model, mu0, Sigma0):
    """dynamax's ``ParamsLGSSM`` for the book's model, as a differentiable JAX function.

    dynamax's first observation is of its initial state, so its initial mean and
    covariance are the book's predicted prior of ``x_1``: ``A mu0`` and
    ``A Sigma0 A' + CC'``; its noise covariances are ``Q = CC'`` and ``R = HH'``.
    ``jax.vjp`` of this map carries dynamax's gradient (w.r.t. its parameters)
    back to one w.r.t. ``(model, mu0)``, comparable with ours.
    """
    from dynamax.linear_gaussian_ssm.inference import (
        ParamsLGSSM, ParamsLGSSMDynamics, ParamsLGSSMEmissions, ParamsLGSSMInitial)

    A, C, G, H = (jnp.asarray(m) for m in model)
    N, M = A.shape[0], G.shape[0]
    Q = C @ C.T
    return ParamsLGSSM(
        initial=ParamsLGSSMInitial(mean=A @ mu0, cov=A @ Sigma0 @ A.T + Q),
        dynamics=ParamsLGSSMDynamics(weights=A, bias=jnp.zeros(N),
                                     input_weights=jnp.zeros((N, 0)), cov=Q),
        emissions=ParamsLGSSMEmissions(weights=G, bias=jnp.zeros(M),
                                       input_weights=jnp.zeros((M, 0)), cov=H @ H.T),
    )


def dynamax_marginal_loglik(params, y):
    """dynamax's sequential ``lgssm_filter``, its log-likelihood only."""
    from dynamax.linear_gaussian_ssm import lgssm_filter

    return lgssm_filter(params, y).marginal_loglik


@contextlib.contextmanager
def dynamax_without_boost():
    """dynamax's filter with no diagonal boost in its gain: the exact filter, for the checks.

    dynamax's ``psd_solve`` adds 1e-9 (absolute) to the diagonal of S_t when
    it forms the gain; where S_t is small (the source N=2 model has
    HH' = 0.0025 I) that moves the log-likelihood by about 1e-8 relative,
    which no relative jitter of ours reproduces. Inside this context the
    boost is 0, so the check compares the two implementations of the exact
    filter; the timed functions are dynamax's own. JAX's caches are cleared
    on entry and exit, so that no trace of the patched code is reused.
    """
    import dynamax.linear_gaussian_ssm.inference as inference

    stock = inference.psd_solve
    jax.clear_caches()
    inference.psd_solve = lambda A, b, diagonal_boost=0.0: stock(A, b, diagonal_boost=0.0)
    try:
        yield
    finally:
        inference.psd_solve = stock
        jax.clear_caches()


def dynamax_loglik(model, mu0, Sigma0):
    """dynamax's parameters and a jitted ``(params, y) -> loglik``."""
    params = dynamax_params(model, jnp.asarray(mu0), jnp.asarray(Sigma0))
    return params, jax.jit(dynamax_marginal_loglik)


def dynamax_value_and_grad(model, mu0, Sigma0):
    """dynamax's parameters and a jitted ``(params, y) -> (loglik, d loglik / d params)``."""
    params = dynamax_params(model, jnp.asarray(mu0), jnp.asarray(Sigma0))
    return params, jax.jit(jax.value_and_grad(dynamax_marginal_loglik))


def filterpy_loglik(model, mu0, Sigma0, y):
    """filterpy's KalmanFilter, predict then update, summing its log-likelihoods."""
    from filterpy.kalman import KalmanFilter

    A, C, G, H = (np.asarray(m) for m in model)
    kf = KalmanFilter(dim_x=A.shape[0], dim_z=G.shape[0])
    kf.F, kf.H, kf.Q, kf.R = A, G, C @ C.T, H @ H.T
    kf.x, kf.P = np.asarray(mu0, dtype=float).copy(), np.asarray(Sigma0, dtype=float).copy()
    total = 0.0
    for y_t in np.asarray(y):
        kf.predict()
        kf.update(y_t)
        total += kf.log_likelihood
    return total
