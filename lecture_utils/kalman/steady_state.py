"""The steady-state Kalman gain, from the discrete algebraic Riccati equation (SciPy)."""

import numpy as np
import scipy.linalg

from lecture_utils.lss import LSSModel, check_lss_model

__all__ = ["steady_state_gain"]


def steady_state_gain(model: LSSModel) -> np.ndarray:
    """The limit of the gains ``K_t`` from the discrete algebraic Riccati equation.

    The steady-state predicted covariance ``P`` solves
    ``P = A (P - P G' (G P G' + HH')^{-1} G P) A' + CC'``
    (``scipy.linalg.solve_discrete_are``); then ``K = P G' (G P G' + HH')^{-1}``,
    in the same update form as :attr:`KalmanResult.gain`.

    Returns:
        (N, M) NumPy array.
    """
    A, C, G, H = (np.asarray(m) for m in check_lss_model(model)[0])
    P = scipy.linalg.solve_discrete_are(A.T, G.T, C @ C.T, H @ H.T)
    S = G @ P @ G.T + H @ H.T
    return np.linalg.solve(S, G @ P).T
