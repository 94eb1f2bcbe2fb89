"""Log-likelihood functions of the implementations a reader might use instead.

Every function takes the book's timing: ``x_0 ~ N(mu0, Sigma0)`` and ``y[t]``
observes ``x_{t+1}``. Peers whose first observation is of their initial state
(statsmodels, dynamax, filterpy) are given the predicted prior of ``x_1``.
"""

import contextlib
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from lecture_utils.kalman.reference import statsmodels_kalman

LOG_2PI = math.log(2 * math.pi)


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


# ----- the practical floor: a plain loop compiled by numba ----------------------------------

NUMBA_STEADY_RTOL = 1e-14
"""The numba loop's switch: the predicted covariance ``P_t`` counts as converged once
``max |P_t - P_{t-1}| <= NUMBA_STEADY_RTOL * max |P_t|``, a change of a few units in
the last place of its largest entry."""


@functools.cache
def _numba_kernel(N: int, M: int, steady_state: bool):
    """The njit-compiled filter for one (N, M), both sizes compile-time constants.

    N and M are read from the enclosing scope, which numba freezes into the
    compiled code, so every loop below has a constant trip count that LLVM can
    unroll; no array is allocated inside the time loop and the Cholesky factor
    of the M x M innovation covariance is written out.
    """
    import numba

    @numba.njit(cache=False)
    def loglik(A, Q, G, R, mu0, Sigma0, y, rtol):
        T = y.shape[0]
        mu, Sigma = mu0.copy(), Sigma0.copy()
        mu_hat, AS, P, P_old = np.empty(N), np.empty((N, N)), np.empty((N, N)), np.empty((N, N))
        GP, L, W, z = np.empty((M, N)), np.empty((M, M)), np.empty((M, N)), np.empty(M)
        P_old[:] = np.inf
        total, log_det, t = 0.0, 0.0, 0
        while t < T:
            # predict: mu_hat = A mu, P = A Sigma A' + CC'
            for i in range(N):
                s = 0.0
                for k in range(N):
                    s += A[i, k] * mu[k]
                mu_hat[i] = s
            for i in range(N):
                for j in range(N):
                    s = 0.0
                    for k in range(N):
                        s += A[i, k] * Sigma[k, j]
                    AS[i, j] = s
            for i in range(N):
                for j in range(i + 1):
                    s = Q[i, j]
                    for k in range(N):
                        s += AS[i, k] * A[j, k]
                    P[i, j] = s
                    P[j, i] = s
            # S = G P G' + HH' = L L', its lower triangle only
            for i in range(M):
                for j in range(N):
                    s = 0.0
                    for k in range(N):
                        s += G[i, k] * P[k, j]
                    GP[i, j] = s
            log_det = 0.0
            for j in range(M):
                for i in range(j, M):
                    s = R[i, j]
                    for k in range(N):
                        s += GP[i, k] * G[j, k]
                    for k in range(j):
                        s -= L[i, k] * L[j, k]
                    if i == j:
                        if not s > 0.0:
                            return -np.inf
                        L[j, j] = math.sqrt(s)
                        log_det += 2.0 * math.log(L[j, j])
                    else:
                        L[i, j] = s / L[j, j]
            # W = L^{-1} G P and z = L^{-1} nu, nu = y_t - G mu_hat (forward substitution)
            quad = 0.0
            for i in range(M):
                for j in range(N):
                    s = GP[i, j]
                    for k in range(i):
                        s -= L[i, k] * W[k, j]
                    W[i, j] = s / L[i, i]
                s = y[t, i]
                for k in range(N):
                    s -= G[i, k] * mu_hat[k]
                for k in range(i):
                    s -= L[i, k] * z[k]
                z[i] = s / L[i, i]
                quad += z[i] * z[i]
            total -= 0.5 * (M * LOG_2PI + log_det + quad)
            # update: mu = mu_hat + K nu = mu_hat + W' z, Sigma = P - W' W
            for i in range(N):
                s = mu_hat[i]
                for k in range(M):
                    s += W[k, i] * z[k]
                mu[i] = s
            for i in range(N):
                for j in range(i + 1):
                    s = P[i, j]
                    for k in range(M):
                        s -= W[k, i] * W[k, j]
                    Sigma[i, j] = s
                    Sigma[j, i] = s
            t += 1
            if steady_state:
                change, scale = 0.0, 0.0
                for i in range(N):
                    for j in range(N):
                        change = max(change, abs(P[i, j] - P_old[i, j]))
                        scale = max(scale, abs(P[i, j]))
                        P_old[i, j] = P[i, j]
                if change <= rtol * scale:
                    break
        # steady state (only with the switch): L and W are those of the converged P
        constant = M * LOG_2PI + log_det
        while t < T:
            for i in range(N):
                s = 0.0
                for k in range(N):
                    s += A[i, k] * mu[k]
                mu_hat[i] = s
            quad = 0.0
            for i in range(M):
                s = y[t, i]
                for k in range(N):
                    s -= G[i, k] * mu_hat[k]
                for k in range(i):
                    s -= L[i, k] * z[k]
                z[i] = s / L[i, i]
                quad += z[i] * z[i]
            for i in range(N):
                s = mu_hat[i]
                for k in range(M):
                    s += W[k, i] * z[k]
                mu[i] = s
            total -= 0.5 * (constant + quad)
            t += 1
        return total

    return loglik


def numba_loglik(model, mu0, Sigma0, y, *, steady_state: bool = False):
    """A callable running a plain Kalman loop compiled by numba: the practical floor.

    The textbook recursion in the book's timing, written out element by element
    for the sizes of ``model`` (fixed when compiled, one compilation per (N, M)):
    predict ``mu_hat = A mu``, ``P = A Sigma A' + CC'``; ``S = G P G' + HH' = L L'``;
    ``nu = y_t - G mu_hat``; add ``-(M log 2 pi + log det S + nu' S^{-1} nu) / 2``;
    update ``mu = mu_hat + P G' S^{-1} nu``, ``Sigma = P - P G' S^{-1} G P``.
    With ``steady_state=True``, once ``P`` has converged to rounding (see
    ``NUMBA_STEADY_RTOL``) only the mean recursion runs, with the last ``L`` and
    gain, as statsmodels does by default (its test is looser: 1e-19 on the
    squared change). No missing data (NaN in ``y`` is not handled); ``-inf``
    if some ``S_t`` is not positive definite. The first call compiles.

    Returns:
        A function of no arguments returning the log-likelihood (a float).
    """
    A, C, G, H = (np.ascontiguousarray(m, dtype=float) for m in model)
    args = (A, C @ C.T, G, H @ H.T, np.array(mu0, dtype=float), np.array(Sigma0, dtype=float),
            np.ascontiguousarray(y, dtype=float), NUMBA_STEADY_RTOL)
    kernel = _numba_kernel(A.shape[0], G.shape[0], steady_state)
    return functools.partial(kernel, *args)
