"""Kalman filtering, smoothing and log-likelihoods of the linear state-space model.

The public names, all importable from here:

* :func:`kalman_filter`, :func:`kalman_loglik`, :func:`kalman_smoother`,
  :func:`kalman_sample`, :func:`kalman_loglik_batch`, :func:`kalman_loglik_sharded`:
  the front door (:mod:`.api`), which validates once and dispatches to a backend
  (:func:`kalman_sample` draws whole state paths given the data: a simulation
  smoother);
* :class:`KalmanResult`, :class:`SmootherResult`: the result types (:mod:`.results`);
* :func:`steady_state_gain`: the Riccati gain, by SciPy (:mod:`.steady_state`);
* :func:`kalman_filter_numpy`: the plain NumPy reference (:mod:`.reference`,
  which also holds the dense-Gaussian and statsmodels references).

The backends are peers that take checked inputs: :mod:`.sequential` (the
``lax.scan`` filter and the log-likelihood's reverse rule), :mod:`.adjoint`
(that rule's backward recursion and parameter gradients), :mod:`.smoother`,
:mod:`.sample` (Durbin and Koopman's simulation smoother, from the smoother's
means), :mod:`.parallel` (the blocked parallel scan) and :mod:`.batch` (many models at
once, on one device or sharded). They share the private :mod:`._checks` (the
one validator), :mod:`._steps` (predict and update) and :mod:`._linalg`
(small-matrix routines).
"""

from lecture_utils.kalman.api import (
                                      kalman_filter,
                                      kalman_loglik,
                                      kalman_loglik_batch,
                                      kalman_loglik_sharded,
                                      kalman_sample,
                                      kalman_smoother,
)
from lecture_utils.kalman.reference import kalman_filter_numpy
from lecture_utils.kalman.results import KalmanResult, SmootherResult
from lecture_utils.kalman.steady_state import steady_state_gain

__all__ = [
    "KalmanResult",
    "SmootherResult",
    "kalman_filter",
    "kalman_filter_numpy",
    "kalman_loglik",
    "kalman_loglik_batch",
    "kalman_loglik_sharded",
    "kalman_sample",
    "kalman_smoother",
    "steady_state_gain",
]
