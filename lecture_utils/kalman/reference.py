"""Plain NumPy references for the tests and the lectures (no JAX)."""

import numpy as np

from lecture_utils.kalman._steps import LOG_2PI
from lecture_utils.simulation import LSSModel


def kalman_filter_numpy(model: LSSModel, mu0, Sigma0, y, *, jitter: float = 1e-8):
    """Plain NumPy reference filter with the same timing as :func:`kalman_filter`.

    Written independently (``np.linalg.solve`` and ``slogdet`` instead of
    Cholesky factors) so that agreement is evidence, not repetition.

    Returns:
        ``(loglik, mu, Sigma, gain)`` as NumPy arrays with the shapes of
        :class:`KalmanResult`.
    """
    A, C, G, H = (np.asarray(m, dtype=float) for m in model)
    y = np.asarray(y, dtype=float)
    T, M = y.shape
    N = A.shape[0]
    mu = np.empty((T + 1, N))
    Sigma = np.empty((T + 1, N, N))
    gain = np.empty((T, N, M))
    mu[0], Sigma[0] = mu0, Sigma0
    loglik = 0.0
    for t in range(T):
        mu_hat = A @ mu[t]
        Sigma_hat = A @ Sigma[t] @ A.T + C @ C.T
        S = G @ Sigma_hat @ G.T + H @ H.T
        S = 0.5 * (S + S.T) + jitter * np.eye(M)
        nu = y[t] - G @ mu_hat
        gain[t] = np.linalg.solve(S, G @ Sigma_hat).T
        mu[t + 1] = mu_hat + gain[t] @ nu
        Sigma[t + 1] = Sigma_hat - gain[t] @ G @ Sigma_hat
        Sigma[t + 1] = 0.5 * (Sigma[t + 1] + Sigma[t + 1].T)
        _, log_det_S = np.linalg.slogdet(S)
        loglik -= 0.5 * (M * LOG_2PI + log_det_S + nu @ np.linalg.solve(S, nu))
    return loglik, mu, Sigma, gain
