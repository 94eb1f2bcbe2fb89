"""Kalman filtering, smoothing and log-likelihoods of the linear state-space model.

Everything public is importable from here; the submodules keep one job each:
``sequential`` (the ``lax.scan`` filter, the log-likelihood with its
hand-derived reverse rule, the smoother), ``parallel`` (the associative-scan
filter), ``batch`` (many models at once), ``steady_state`` (the Riccati gain),
``reference`` (plain NumPy, for tests), and the private ``_checks`` (the one
validator), ``_linalg`` (small-matrix routines) and ``_steps`` (predict and
update) that they share.
"""

from lecture_utils.kalman.batch import kalman_loglik_batch, kalman_loglik_sharded
from lecture_utils.kalman.reference import kalman_filter_numpy
from lecture_utils.kalman.sequential import (
    KalmanResult,
    SmootherResult,
    kalman_filter,
    kalman_loglik,
    kalman_smoother,
)
from lecture_utils.kalman.steady_state import steady_state_gain

__all__ = [
    "KalmanResult",
    "SmootherResult",
    "kalman_filter",
    "kalman_filter_numpy",
    "kalman_loglik",
    "kalman_loglik_batch",
    "kalman_loglik_sharded",
    "kalman_smoother",
    "steady_state_gain",
]
