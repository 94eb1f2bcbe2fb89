"""Log-likelihood functions of the implementations a reader might use instead.

Every function takes the book's timing: ``x_0 ~ N(mu0, Sigma0)`` and ``y[t]``
observes ``x_{t+1}``. Peers whose first observation is of their initial state
(statsmodels, dynamax, filterpy) are given the predicted prior of ``x_1``.
"""

import jax
import jax.numpy as jnp
import numpy as np


def predicted_prior(model, mu0, Sigma0):
    A, C = np.asarray(model.A), np.asarray(model.C)
    return A @ np.asarray(mu0), A @ np.asarray(Sigma0) @ A.T + C @ C.T


def statsmodels_loglik(model, mu0, Sigma0, y):
    """A callable running statsmodels' Cython filter (known init, no steady-state switch)."""
    from statsmodels.tsa.statespace.kalman_filter import KalmanFilter

    A, C, G, H = (np.asarray(m) for m in model)
    N, K = C.shape  # statsmodels needs K <= N; every benchmark model has K = N
    kf = KalmanFilter(k_endog=G.shape[0], k_states=N, k_posdef=K, tolerance=0)
    kf.bind(np.asarray(y))
    kf["design"], kf["obs_cov"] = G, H @ H.T
    kf["transition"], kf["selection"], kf["state_cov"] = A, C, np.eye(K)
    kf.initialize_known(*predicted_prior(model, mu0, Sigma0))
    return kf.loglike


def dynamax_loglik(model, mu0, Sigma0):
    """A jitted ``y -> loglik`` built on dynamax's sequential ``lgssm_filter``."""
    from dynamax.linear_gaussian_ssm import lgssm_filter
    from dynamax.linear_gaussian_ssm.inference import (
        ParamsLGSSM, ParamsLGSSMDynamics, ParamsLGSSMEmissions, ParamsLGSSMInitial)

    A, C, G, H = (jnp.asarray(m) for m in model)
    N, M = A.shape[0], G.shape[0]
    mean1, cov1 = predicted_prior(model, mu0, Sigma0)
    params = ParamsLGSSM(
        initial=ParamsLGSSMInitial(mean=jnp.asarray(mean1), cov=jnp.asarray(cov1)),
        dynamics=ParamsLGSSMDynamics(weights=A, bias=jnp.zeros(N),
                                     input_weights=jnp.zeros((N, 0)), cov=C @ C.T),
        emissions=ParamsLGSSMEmissions(weights=G, bias=jnp.zeros(M),
                                       input_weights=jnp.zeros((M, 0)), cov=H @ H.T),
    )
    return params, jax.jit(lambda params, y: lgssm_filter(params, y).marginal_loglik)


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
