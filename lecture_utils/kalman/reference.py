"""Plain NumPy references for the tests and the lectures (no JAX)."""

import numpy as np

from lecture_utils.kalman._steps import LOG_2PI
from lecture_utils.simulation import LSSModel


def kalman_filter_numpy(model: LSSModel, mu0, Sigma0, y, *, jitter: float = 1e-8):
    """Plain NumPy reference filter with the same timing as :func:`kalman_filter`.

    Written independently: ``np.linalg.solve`` and ``slogdet`` instead of
    Cholesky factors, and missing entries (NaN) handled by selecting the
    observed rows of ``G``, ``y`` and ``HH'`` at each date instead of masking,
    so that agreement is evidence, not repetition. ``jitter`` multiplies the
    diagonal of each observed ``S_t`` by ``1 + jitter``.

    Returns:
        ``(loglik, mu, Sigma, gain)`` as NumPy arrays with the shapes of
        :class:`KalmanResult` (gain columns of missing entries are zero).
    """
    A, C, G, H = (np.asarray(m, dtype=float) for m in model)
    y = np.asarray(y, dtype=float)
    T, M = y.shape
    N = A.shape[0]
    mu = np.empty((T + 1, N))
    Sigma = np.empty((T + 1, N, N))
    gain = np.zeros((T, N, M))
    mu[0], Sigma[0] = mu0, Sigma0
    loglik = 0.0
    for t in range(T):
        mu_hat = A @ mu[t]
        Sigma_hat = A @ Sigma[t] @ A.T + C @ C.T
        obs = ~np.isnan(y[t])
        G_o, H_o = G[obs], H[obs]
        S = G_o @ Sigma_hat @ G_o.T + H_o @ H_o.T
        S = 0.5 * (S + S.T) + jitter * np.diag(np.diag(S))
        nu = y[t, obs] - G_o @ mu_hat
        K = np.linalg.solve(S, G_o @ Sigma_hat).T
        gain[t][:, obs] = K
        mu[t + 1] = mu_hat + K @ nu
        Sigma[t + 1] = Sigma_hat - K @ G_o @ Sigma_hat
        Sigma[t + 1] = 0.5 * (Sigma[t + 1] + Sigma[t + 1].T)
        if obs.any():
            _, log_det_S = np.linalg.slogdet(S)
            loglik -= 0.5 * (obs.sum() * LOG_2PI + log_det_S + nu @ np.linalg.solve(S, nu))
    return loglik, mu, Sigma, gain
