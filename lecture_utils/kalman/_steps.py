"""The Kalman filter's predict and update steps, shared by every filter in the package.

Both steps accept trailing batch axes on every argument (a (N, N, B) Sigma is
B covariances, stored batch-last), which :mod:`lecture_utils.kalman.batch`
uses; the single filters pass none.
"""

import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular

from lecture_utils.kalman import _linalg as sl

LOG_2PI = float(np.log(2 * np.pi))


def symmetrize(X):
    return 0.5 * (X + sl.transpose(X))


def predict(mu, Sigma, A, Q):
    """One-step-ahead mean (N,) and covariance (N, N) of the state."""
    return sl.matvec(A, mu), sl.matmul(sl.matmul(A, Sigma), sl.transpose(A)) + Q


def condition_on(mu_hat, Sigma_hat, y_t, G, R, jitter):
    """Condition the prediction on ``y_t``; returns the update and this step's terms.

    ``S = L L^T`` is factored once; every solve below is triangular. For small
    M the factorisation and solves are unrolled into scalar operations
    (``_linalg``), which XLA fuses; the maths is the same.
    """
    M = y_t.shape[0]
    Sigma_hat_Gt = sl.matmul(Sigma_hat, sl.transpose(G))  # (N, M)
    S = sl.add_to_diagonal(symmetrize(sl.matmul(G, Sigma_hat_Gt) + R), jitter)
    nu = y_t - sl.matvec(G, mu_hat)
    if M <= sl.MAX_UNROLLED_M:
        L = sl.cholesky(S)  # NaN entries if S is not positive definite
        # K = Sigma_hat G' S^{-1}  <=>  K' = L^{-T} L^{-1} G Sigma_hat
        K_rows = sl.solve_lower_transpose(L, sl.solve_lower(L, list(sl.transpose(Sigma_hat_Gt))))
        K = jnp.stack(K_rows, axis=1)
        z = sl.solve_lower(L, list(nu))  # z'z = nu' S^{-1} nu
        quad = sum(z_i * z_i for z_i in z)
        log_det_S = 2.0 * sum(jnp.log(L[i][i]) for i in range(M))
    else:
        L = jnp.linalg.cholesky(S)
        half = solve_triangular(L, Sigma_hat_Gt.T, lower=True)
        K = solve_triangular(L.T, half, lower=False).T
        z = solve_triangular(L, nu, lower=True)
        quad = z @ z
        log_det_S = 2.0 * jnp.sum(jnp.log(jnp.diag(L)))
    loglik_t = -0.5 * (M * LOG_2PI + log_det_S + quad)
    mu = mu_hat + sl.matvec(K, nu)
    Sigma = symmetrize(Sigma_hat - sl.matmul(K, sl.transpose(Sigma_hat_Gt)))
    return mu, Sigma, K, nu, S, loglik_t
