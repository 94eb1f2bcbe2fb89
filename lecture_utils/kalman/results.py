"""The result types of the Kalman filter and smoother (NamedTuples, so pytrees)."""

from typing import NamedTuple

import jax

__all__ = ["KalmanResult", "SmootherResult"]


class KalmanResult(NamedTuple):
    """Output of :func:`~lecture_utils.kalman.kalman_filter` (and of the NumPy reference).

    Attributes:
        loglik: () log-likelihood of all observed entries; ``-inf`` if some
            innovation covariance was not positive definite.
        mu: (T + 1, N) filtered means, ``mu[0] = mu0``.
        Sigma: (T + 1, N, N) filtered covariances, ``Sigma[0] = Sigma0``.
        gain: (T, N, M) Kalman gains ``K_t`` (zero columns for missing entries).
        innovation: (T, M) innovations ``nu_t = y[t] - G A mu[t]`` (0 where missing).
        innovation_cov: (T, M, M) innovation covariances ``S_t`` (identity
            rows and columns where missing).

    Where the log-likelihood is ``-inf`` (under ``jit``), the moments after
    the failing step are those of the last step that succeeded, held fixed.
    """

    loglik: jax.Array
    mu: jax.Array
    Sigma: jax.Array
    gain: jax.Array
    innovation: jax.Array
    innovation_cov: jax.Array


class SmootherResult(NamedTuple):
    """Output of :func:`~lecture_utils.kalman.kalman_smoother`.

    Attributes:
        mu: (T + 1, N) smoothed means ``E[x_t | y]``; row 0 is ``x_0``.
        Sigma: (T + 1, N, N) smoothed covariances ``Cov[x_t | y]``.
        loglik: () log-likelihood, as :func:`~lecture_utils.kalman.kalman_loglik`.
    """

    mu: jax.Array
    Sigma: jax.Array
    loglik: jax.Array
