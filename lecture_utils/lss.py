r"""The linear state-space model: its type and its checks.

.. math::

    x_{t+1} = A x_t + C w_{t+1}, \qquad y_t = G x_t + H v_t,

with standard normal shocks ``w`` (K,) and ``v`` (L,). The simulator
(:mod:`lecture_utils.simulation`) and the Kalman filters
(:mod:`lecture_utils.kalman`) both import the model from here.
"""

from typing import Any, NamedTuple

from lecture_utils._validation import as_float64, check_shape

__all__ = ["LSSModel", "check_lss_model"]


class LSSModel(NamedTuple):
    """Linear state-space model ``x' = A x + C w``, ``y = G x + H v`` (a pytree).

    Attributes:
        A: (N, N) transition matrix.
        C: (N, K) loading of the state shocks.
        G: (M, N) observation matrix.
        H: (M, L) loading of the observation shocks.
    """

    A: Any
    C: Any
    G: Any
    H: Any


def check_lss_model(model: LSSModel) -> tuple[LSSModel, tuple[int, int, int, int]]:
    """Validate an ``LSSModel``; return it in float64 with ``(N, K, M, L)``.

    Raises:
        ValueError: if ``model`` is not an ``LSSModel`` or a matrix has the
            wrong shape (the message names the matrix and both shapes).
    """
    if not isinstance(model, LSSModel):
        raise ValueError(f"model must be an LSSModel, got {type(model).__name__}")
    A, C, G, H = (as_float64(f"model.{k}", m) for k, m in zip("ACGH", model))
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"model.A must be square (N, N), got {A.shape}")
    N = A.shape[0]
    check_shape("model.C", C, (N, None))
    check_shape("model.G", G, (None, N))
    M = G.shape[0]
    check_shape("model.H", H, (M, None))
    return LSSModel(A, C, G, H), (N, C.shape[1], M, H.shape[1])
