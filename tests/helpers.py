"""Independent references and shared helpers for the Kalman tests (NumPy, SciPy, statsmodels).

Nothing here imports ``lecture_utils.kalman``: every answer is computed another
way, so that agreement with the library is evidence rather than repetition.

* :func:`joint_gaussian` writes the whole model as one multivariate normal of
  ``(x_0, ..., x_T, y_0, ..., y_{T-1})``; :func:`dense_loglik`,
  :func:`dense_filter` and :func:`dense_smoother` condition it on the observed
  entries of ``y`` with plain dense linear algebra.
* :func:`numpy_filter` is a textbook loop that drops missing entries by
  selecting rows (not by masking), with the relative jitter of the spec.
* :func:`statsmodels_filter` / :func:`statsmodels_smoother` run statsmodels
  with the timing shift ``a_1 = A mu0, P_1 = A Sigma0 A' + C C'``.

Timing (as in the library): ``y[t]`` observes ``x_{t+1}``; ``x_0 ~ N(mu0, Sigma0)``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
import scipy.stats

from lecture_utils.simulation import LSSModel

LOG_2PI = np.log(2 * np.pi)


# ----- random problems ---------------------------------------------------------------


def random_lss(rng: np.random.Generator, N=3, K=2, M=2, L=2, radius=0.9) -> LSSModel:
    """A random stable LSS model with spectral radius ``radius``."""
    A = rng.normal(size=(N, N))
    A *= radius / np.max(np.abs(np.linalg.eigvals(A)))
    return LSSModel(A, 0.3 * rng.normal(size=(N, K)), rng.normal(size=(M, N)),
                    0.2 * rng.normal(size=(M, L)) + 0.2 * np.eye(M, L))


def simulate_data(rng, model, T, mu0, Sigma0):
    """Observations y (T, M) of x_1..x_T with x_0 ~ N(mu0, Sigma0), by a NumPy loop."""
    A, C, G, H = (np.asarray(m) for m in model)
    x = rng.multivariate_normal(np.asarray(mu0, float), np.asarray(Sigma0, float))
    y = np.empty((T, G.shape[0]))
    for t in range(T):
        x = A @ x + C @ rng.normal(size=C.shape[1])
        y[t] = G @ x + H @ rng.normal(size=H.shape[1])
    return y


def with_missing(rng, y, frac=0.25, nan_rows=(), nan_col_rows=()):
    """A copy of ``y`` with a random ``frac`` of entries NaN, whole rows ``nan_rows``
    NaN, and column 0 NaN in ``nan_col_rows``."""
    y = np.array(y, dtype=float)
    y[rng.uniform(size=y.shape) < frac] = np.nan
    y[list(nan_rows)] = np.nan
    y[list(nan_col_rows), 0] = np.nan
    return y


def random_rotation(rng, n):
    Q, R = np.linalg.qr(rng.normal(size=(n, n)))
    return Q * np.sign(np.diag(R))


def stack_models(models):
    return LSSModel(*(np.stack(m) for m in zip(*models)))


def as_jax(model):
    return LSSModel(*(jnp.asarray(m) for m in model))


# ----- the dense joint Gaussian ------------------------------------------------------


def joint_gaussian(model, mu0, Sigma0, T):
    """Mean and covariance of ``X = (x_0..x_T)`` ((T+1)N,) and ``Y = (y_0..y_{T-1})`` (TM,).

    Every variable is a linear map of the independent ``x_0 - mu0``, ``w_1..w_T``
    and ``v_1..v_T``; the covariances are products of those maps.
    Returns ``(mean_X, mean_Y, cov_XX, cov_YX, cov_YY)``.
    """
    A, C, G, H = (np.asarray(m, float) for m in model)
    N, K = C.shape
    M, L = H.shape
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


def dense_loglik(model, mu0, Sigma0, y):
    """log density of the observed (non-NaN) entries of y, as one multivariate normal."""
    y = np.asarray(y, float)
    _, mean_Y, _, _, cov_YY = joint_gaussian(model, mu0, Sigma0, y.shape[0])
    o = _observed(y)
    if not o.any():
        return 0.0
    return scipy.stats.multivariate_normal(mean_Y[o], cov_YY[np.ix_(o, o)]).logpdf(
        y.ravel()[o])


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
    """E[x_t | all observed y] and Cov[x_t | all observed y], t = 0..T, densely."""
    y = np.asarray(y, float)
    T, N = y.shape[0], np.shape(model.A)[0]
    mean_X, mean_Y, cov_XX, cov_YX, cov_YY = joint_gaussian(model, mu0, Sigma0, T)
    o = _observed(y)
    mean, cov = _condition(mean_X, cov_XX, mean_Y, cov_YX, cov_YY, y.ravel()[o], o)
    return _blocks(mean, cov, N, T)


def dense_filter(model, mu0, Sigma0, y):
    """E[x_t | y[:t]] and Cov[x_t | y[:t]], t = 0..T: one dense conditioning per t."""
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


# ----- a textbook NumPy filter with missing data and relative jitter -------------------


def numpy_filter(model, mu0, Sigma0, y, jitter=0.0):
    """Kalman filter that keeps only the observed rows of G, H and y at each date.

    The relative jitter multiplies each observed diagonal entry of S_t by
    ``1 + jitter``. Returns a dict with ``loglik``, ``mu`` (T+1, N), ``Sigma``
    (T+1, N, N), ``gain`` (T, N, M) and ``innovation`` (T, M), zero for
    missing entries.
    """
    A, C, G, H = (np.asarray(m, float) for m in model)
    y = np.asarray(y, float)
    T, M = y.shape
    N = A.shape[0]
    mu, Sigma = np.empty((T + 1, N)), np.empty((T + 1, N, N))
    gain, innovation = np.zeros((T, N, M)), np.zeros((T, M))
    mu[0], Sigma[0] = mu0, Sigma0
    loglik = 0.0
    for t in range(T):
        m_hat, P_hat = A @ mu[t], A @ Sigma[t] @ A.T + C @ C.T
        o = ~np.isnan(y[t])
        if not o.any():
            mu[t + 1], Sigma[t + 1] = m_hat, P_hat
            continue
        Go, Ho = G[o], H[o]
        S = Go @ P_hat @ Go.T + Ho @ Ho.T
        S = 0.5 * (S + S.T)
        S = S + jitter * np.diag(np.diag(S))
        nu = y[t, o] - Go @ m_hat
        K = scipy.linalg.solve(S, Go @ P_hat, assume_a="pos").T
        gain[t][:, o], innovation[t, o] = K, nu
        mu[t + 1] = m_hat + K @ nu
        Sigma[t + 1] = P_hat - K @ S @ K.T
        sign, logdet = np.linalg.slogdet(S)
        assert sign > 0
        loglik -= 0.5 * (o.sum() * LOG_2PI + logdet + nu @ np.linalg.solve(S, nu))
    return dict(loglik=loglik, mu=mu, Sigma=Sigma, gain=gain, innovation=innovation)


# ----- statsmodels --------------------------------------------------------------------


def _statsmodels(model, mu0, Sigma0, y, cls):
    A, C, G, H = (np.asarray(m, float) for m in model)
    N, K = C.shape
    kf = cls(k_endog=G.shape[0], k_states=N, k_posdef=K)
    kf.bind(np.asarray(y, float))  # NaN entries are missing for statsmodels too
    kf["design"], kf["obs_cov"] = G, H @ H.T
    kf["transition"], kf["selection"], kf["state_cov"] = A, C, np.eye(K)
    # statsmodels' alpha_1 is our x_1 = A x_0 + C w: its prior is the predicted one.
    kf.initialize_known(A @ mu0, A @ Sigma0 @ A.T + C @ C.T)
    # statsmodels freezes the gain once P_t stops changing by 1e-19 (differences of
    # ~1e-9 relative in the log-likelihood); run the exact filter throughout.
    kf.tolerance = 0.0
    return kf


def statsmodels_filter(model, mu0, Sigma0, y):
    """(loglik, filtered means (T, N), filtered covariances (T, N, N)) of x_1..x_T."""
    from statsmodels.tsa.statespace.kalman_filter import KalmanFilter

    res = _statsmodels(model, mu0, Sigma0, y, KalmanFilter).filter()
    return res.llf, res.filtered_state.T, np.moveaxis(res.filtered_state_cov, -1, 0)


def statsmodels_smoother(model, mu0, Sigma0, y):
    """(smoothed means (T, N), smoothed covariances (T, N, N)) of x_1..x_T."""
    from statsmodels.tsa.statespace.kalman_smoother import KalmanSmoother

    res = _statsmodels(model, mu0, Sigma0, y, KalmanSmoother).smooth()
    return res.smoothed_state.T, np.moveaxis(res.smoothed_state_cov, -1, 0)


# ----- comparing gradients ------------------------------------------------------------


def assert_trees_close_normwise(actual, desired, rtol, err_msg=""):
    """Leaf by leaf, ``||actual - desired|| <= rtol * ||desired||`` (Frobenius norms).

    Norm-wise, because an elementwise relative test is meaningless for entries
    that are zero up to rounding, while an absolute one depends on the scale.
    Also requires both to be finite.
    """
    a_leaves, a_def = jax.tree.flatten(actual)
    d_leaves, d_def = jax.tree.flatten(desired)
    assert a_def == d_def, f"tree structures differ: {a_def} vs {d_def}"
    for i, (a, d) in enumerate(zip(a_leaves, d_leaves)):
        a, d = np.asarray(a), np.asarray(d)
        assert a.shape == d.shape, f"{err_msg} leaf {i}: shapes {a.shape} vs {d.shape}"
        assert np.all(np.isfinite(a)), f"{err_msg} leaf {i}: non-finite entries"
        assert np.all(np.isfinite(d)), f"{err_msg} leaf {i}: reference non-finite"
        err, scale = np.linalg.norm(a - d), np.linalg.norm(d)
        assert err <= rtol * scale or err == 0.0, (
            f"{err_msg} leaf {i}: ||diff|| = {err:.3e} > {rtol:.0e} * ||ref|| = "
            f"{rtol * scale:.3e}")


def central_difference_along(f, args, direction, eps):
    """(f(args + eps d) - f(args - eps d)) / (2 eps) for pytree ``args`` and ``direction``."""
    plus = jax.tree.map(lambda a, d: a + eps * d, args, direction)
    minus = jax.tree.map(lambda a, d: a - eps * d, args, direction)
    return (np.asarray(f(*plus), float) - np.asarray(f(*minus), float)) / (2 * eps)


def tree_vdot(a, b):
    return float(sum(np.vdot(np.asarray(x), np.asarray(y))
                     for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))))


def random_direction(rng, tree):
    """A standard normal pytree shaped like ``tree`` (NumPy, float64)."""
    return jax.tree.map(lambda x: jnp.asarray(rng.normal(size=np.shape(x))), tree)
