"""Independent references for the Kalman filter: plain NumPy, dense Gaussians, statsmodels.

Nothing here calls the JAX filters: every answer is computed another way, so
that agreement is evidence rather than repetition. Tests, benchmarks and
lectures import these, and only these.

* :func:`kalman_filter_numpy` is a textbook loop that drops missing entries by
  selecting the observed rows of ``G``, ``H`` and ``y`` at each date (the JAX
  filters mask instead), with ``np.linalg.solve`` and ``slogdet`` instead of
  Cholesky factors.
* :func:`joint_gaussian` writes the whole model as one multivariate normal of
  ``(x_0, ..., x_T, y_0, ..., y_{T-1})``; :func:`dense_loglik`,
  :func:`dense_filter` and :func:`dense_smoother` condition it on the
  observed entries of ``y`` with dense linear algebra (O(T^3): small T only).
* :func:`statsmodels_kalman` sets up statsmodels' Cython filter or smoother
  in the book's timing; :func:`statsmodels_filter` and
  :func:`statsmodels_smoother` return its results in the book's layout.

Timing, as everywhere in the package: ``x_0 ~ N(mu0, Sigma0)`` and ``y[t]``
observes ``x_{t+1}``; NaN in ``y`` marks a missing entry.
"""

import numpy as np
import scipy.linalg
import scipy.stats

from lecture_utils.kalman.results import KalmanResult

__all__ = ["dense_filter", "dense_loglik", "dense_smoother", "joint_gaussian",
           "kalman_filter_numpy", "statsmodels_filter", "statsmodels_kalman",
           "statsmodels_smoother"]

LOG_2PI = np.log(2 * np.pi)


def _arrays(model):
    return tuple(np.asarray(m, dtype=float) for m in model)


# ----- a textbook NumPy filter -----------------------------------------------------------


def kalman_filter_numpy(model, mu0, Sigma0, y, *, jitter: float = 1e-8) -> KalmanResult:
    """Plain NumPy reference filter with the timing and results of :func:`kalman_filter`.

    ``jitter`` multiplies each observed diagonal entry of ``S_t`` by
    ``1 + jitter``, as the JAX filters do.

    Returns:
        A :class:`~lecture_utils.kalman.KalmanResult` of NumPy arrays: gain
        columns and innovations of missing entries are zero, and their rows
        and columns of ``innovation_cov`` are the identity's.
    """
    A, C, G, H = _arrays(model)
    y = np.asarray(y, dtype=float)
    T, M = y.shape
    N = A.shape[0]
    mu, Sigma = np.empty((T + 1, N)), np.empty((T + 1, N, N))
    gain, innovation = np.zeros((T, N, M)), np.zeros((T, M))
    innovation_cov = np.broadcast_to(np.eye(M), (T, M, M)).copy()
    mu[0], Sigma[0] = mu0, Sigma0
    loglik = 0.0
    for t in range(T):
        mu_hat = A @ mu[t]
        Sigma_hat = A @ Sigma[t] @ A.T + C @ C.T
        o = ~np.isnan(y[t])
        G_o, H_o = G[o], H[o]
        S = G_o @ Sigma_hat @ G_o.T + H_o @ H_o.T
        S = 0.5 * (S + S.T)
        S = S + jitter * np.diag(np.diag(S))
        nu = y[t, o] - G_o @ mu_hat
        K = np.linalg.solve(S, G_o @ Sigma_hat).T
        gain[t][:, o], innovation[t, o] = K, nu
        innovation_cov[t][np.ix_(o, o)] = S
        mu[t + 1] = mu_hat + K @ nu
        Sigma[t + 1] = Sigma_hat - K @ G_o @ Sigma_hat
        Sigma[t + 1] = 0.5 * (Sigma[t + 1] + Sigma[t + 1].T)
        if o.any():
            sign, log_det_S = np.linalg.slogdet(S)
            if sign <= 0:
                loglik = -np.inf
            loglik -= 0.5 * (o.sum() * LOG_2PI + log_det_S + nu @ np.linalg.solve(S, nu))
    return KalmanResult(loglik, mu, Sigma, gain, innovation, innovation_cov)


# ----- the dense joint Gaussian ----------------------------------------------------------


def joint_gaussian(model, mu0, Sigma0, T):
    """Mean and covariance of ``X = (x_0..x_T)`` ((T+1)N,) and ``Y = (y_0..y_{T-1})`` (TM,).

    Every variable is a linear map of the independent ``x_0 - mu0``, ``w_1..w_T``
    and ``v_1..v_T``; the covariances are products of those maps.

    Returns:
        ``(mean_X, mean_Y, cov_XX, cov_YX, cov_YY)``.
    """
    A, C, G, H = _arrays(model)
    N, K = C.shape
    # X = Phi @ (x_0 - mu0, w_1, ..., w_T) + mean_X
    Phi = np.zeros(((T + 1) * N, N + T * K))
    block = np.eye(N)  # d x_t / d x_0 = A^t
    mean_X = np.zeros((T + 1) * N)
    m = np.asarray(mu0, float)
    for t in range(T + 1):
        Phi[t * N:(t + 1) * N, :N] = block
        mean_X[t * N:(t + 1) * N] = m
        for s in range(1, t + 1):  # d x_t / d w_s = A^{t-s} C
            Phi[t * N:(t + 1) * N, N + (s - 1) * K:N + s * K] = (
                np.linalg.matrix_power(A, t - s) @ C)
        block = A @ block
        m = A @ m
    Lam = scipy.linalg.block_diag(np.asarray(Sigma0, float), np.eye(T * K))
    cov_XX = Phi @ Lam @ Phi.T
    G_big = np.kron(np.eye(T), G)  # Y = G_big X[1:] + (I kron H) v
    cov_YX = G_big @ cov_XX[N:, :]
    cov_YY = G_big @ cov_XX[N:, N:] @ G_big.T + np.kron(np.eye(T), H @ H.T)
    mean_Y = G_big @ mean_X[N:]
    return mean_X, mean_Y, cov_XX, cov_YX, 0.5 * (cov_YY + cov_YY.T)


def _observed(y):
    return ~np.isnan(np.asarray(y, float).ravel())


def dense_loglik(model, mu0, Sigma0, y) -> float:
    """Log density of the observed (non-NaN) entries of ``y`` (T, M), as one multivariate normal."""
    y = np.asarray(y, float)
    _, mean_Y, _, _, cov_YY = joint_gaussian(model, mu0, Sigma0, y.shape[0])
    o = _observed(y)
    if not o.any():
        return 0.0
    return scipy.stats.multivariate_normal(mean_Y[o], cov_YY[np.ix_(o, o)]).logpdf(y.ravel()[o])


def _condition(mean_X, cov_XX, mean_Y, cov_YX, cov_YY, y_obs, o):
    """Moments of X given the entries ``o`` of Y equal ``y_obs``."""
    if not o.any():
        return mean_X, cov_XX
    S = cov_YY[np.ix_(o, o)]
    B = scipy.linalg.solve(S, cov_YX[o], assume_a="pos")  # S^{-1} Cov(Y_o, X)
    mean = mean_X + B.T @ (y_obs - mean_Y[o])
    cov = cov_XX - cov_YX[o].T @ B
    return mean, 0.5 * (cov + cov.T)


def _blocks(mean, cov, N, T):
    mu = mean.reshape(T + 1, N)
    Sigma = np.stack([cov[t * N:(t + 1) * N, t * N:(t + 1) * N] for t in range(T + 1)])
    return mu, Sigma


def dense_smoother(model, mu0, Sigma0, y):
    """``E[x_t | y]`` (T+1, N) and ``Cov[x_t | y]`` (T+1, N, N), t = 0..T, densely."""
    y = np.asarray(y, float)
    T, N = y.shape[0], np.shape(model.A)[0]
    mean_X, mean_Y, cov_XX, cov_YX, cov_YY = joint_gaussian(model, mu0, Sigma0, T)
    o = _observed(y)
    mean, cov = _condition(mean_X, cov_XX, mean_Y, cov_YX, cov_YY, y.ravel()[o], o)
    return _blocks(mean, cov, N, T)


def dense_filter(model, mu0, Sigma0, y):
    """``E[x_t | y[:t]]`` (T+1, N) and ``Cov[x_t | y[:t]]`` (T+1, N, N): one conditioning per t."""
    y = np.asarray(y, float)
    T, M = y.shape
    N = np.shape(model.A)[0]
    mean_X, mean_Y, cov_XX, cov_YX, cov_YY = joint_gaussian(model, mu0, Sigma0, T)
    mu, Sigma = np.empty((T + 1, N)), np.empty((T + 1, N, N))
    flat = y.ravel()
    for t in range(T + 1):
        o = _observed(y) & (np.arange(T * M) < t * M)
        mean, cov = _condition(mean_X, cov_XX, mean_Y, cov_YX, cov_YY, flat[o], o)
        mu[t], Sigma[t] = mean[t * N:(t + 1) * N], cov[t * N:(t + 1) * N, t * N:(t + 1) * N]
    return mu, Sigma


# ----- statsmodels -----------------------------------------------------------------------


def statsmodels_kalman(model, mu0, Sigma0, y, *, smoother: bool = False, tolerance: float = 0.0):
    """statsmodels' ``KalmanFilter`` (or ``KalmanSmoother``) for the book's model, bound to ``y``.

    statsmodels' first state :math:`\\alpha_1` is the book's
    :math:`x_1 = A x_0 + C w_1`, so it starts from the predicted prior
    ``(A mu0, A Sigma0 A' + CC')``. ``tolerance=0`` (the default here) runs
    the exact filter throughout; statsmodels' own default (1e-19) freezes the
    gain once the covariance stops changing, which moves the log-likelihood
    by about 1e-9 relative. NaN entries of ``y`` are missing for statsmodels
    too. Needs K <= N (statsmodels' ``k_posdef``).

    Returns:
        The bound statsmodels object: ``.loglike()``, ``.filter()``, ``.smooth()``.
    """
    from statsmodels.tsa.statespace.kalman_filter import KalmanFilter
    from statsmodels.tsa.statespace.kalman_smoother import KalmanSmoother

    A, C, G, H = _arrays(model)
    mu0, Sigma0 = np.asarray(mu0, float), np.asarray(Sigma0, float)
    N, K = C.shape
    kf = (KalmanSmoother if smoother else KalmanFilter)(
        k_endog=G.shape[0], k_states=N, k_posdef=K, tolerance=tolerance)
    kf.bind(np.asarray(y, float))
    kf["design"], kf["obs_cov"] = G, H @ H.T
    kf["transition"], kf["selection"], kf["state_cov"] = A, C, np.eye(K)
    kf.initialize_known(A @ mu0, A @ Sigma0 @ A.T + C @ C.T)
    return kf


def statsmodels_filter(model, mu0, Sigma0, y):
    """statsmodels' exact filter: ``(loglik, mu (T, N), Sigma (T, N, N))`` of ``x_1..x_T``."""
    res = statsmodels_kalman(model, mu0, Sigma0, y).filter()
    return res.llf, res.filtered_state.T, np.moveaxis(res.filtered_state_cov, -1, 0)


def statsmodels_smoother(model, mu0, Sigma0, y):
    """statsmodels' smoother: ``(loglik, mu (T, N), Sigma (T, N, N))`` of ``x_1..x_T``.

    statsmodels has no ``x_0``: compare with rows 1..T of the book's smoother.
    """
    res = statsmodels_kalman(model, mu0, Sigma0, y, smoother=True).smooth()
    return res.llf, res.smoothed_state.T, np.moveaxis(res.smoothed_state_cov, -1, 0)
