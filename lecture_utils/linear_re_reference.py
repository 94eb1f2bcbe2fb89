r"""NumPy/scipy reference for linear rational-expectations models (generalised Schur).

The model is

.. math::

    A\,E_t x_{t+1} + B\,x_t + C\,x_{t-1} + D\,\varepsilon_t = 0,
    \qquad x_t \in \mathbb{R}^N,\ \varepsilon_t \in \mathbb{R}^K,

and its solution :math:`x_t = P x_{t-1} + Q \varepsilon_t`. With
:math:`z_t = (x_{t-1}, x_t)` the expectational part is the pencil

.. math::

    \underbrace{\begin{pmatrix} I & 0 \\ 0 & A \end{pmatrix}}_{E} z_{t+1}
    = \underbrace{\begin{pmatrix} 0 & I \\ -C & -B \end{pmatrix}}_{F} z_t ,

whose 2N generalised eigenvalues :math:`\lambda = \alpha / \beta` are the
roots of :math:`\det(A\lambda^2 + B\lambda + C) = 0` (a singular ``A`` gives
infinite roots, :math:`\beta = 0`). The ordered QZ decomposition
:math:`F = Q S Z^\top`, :math:`E = Q T Z^\top` (``scipy.linalg.ordqz``) puts the
stable roots, :math:`|\lambda| < 1`, first; the first N columns of Z span the
stable deflating subspace, which is the span of :math:`(I, P)` because
:math:`F (I; P) = E (I; P) P` is :math:`A P^2 + B P + C = 0` written twice.
Hence :math:`P = Z_{21} Z_{11}^{-1}` and :math:`Q = -(A P + B)^{-1} D`.

Blanchard and Kahn (1980): the solution with :math:`\rho(P) < 1` exists and is
unique exactly when N roots are stable; more than N stable roots is
*indeterminate* (many stable solutions), fewer is *explosive* (none).

This is the independent answer the tests, benchmarks and lectures compare
:func:`lecture_utils.linear_re.solve_linear_re` with; it is also where the
JAX solver counts roots for its eager error message.
"""

from typing import NamedTuple

import numpy as np
import scipy.linalg

__all__ = ["RootCount", "companion_pencil", "count_roots", "solve_linear_re_qz"]


class RootCount(NamedTuple):
    """Generalised eigenvalues of the companion pencil, counted.

    Attributes:
        stable: number of roots with :math:`|\\lambda| < 1`.
        unstable: number with :math:`|\\lambda| \\geq 1`, infinite roots included.
        infinite: how many of the unstable ones are infinite (singular ``A``).
        n: the number of variables N; determinate when ``stable == n``.
    """

    stable: int
    unstable: int
    infinite: int
    n: int

    @property
    def verdict(self) -> str:
        """``"determinate"``, ``"indeterminate"`` or ``"explosive"``."""
        if self.stable == self.n:
            return "determinate"
        return "indeterminate" if self.stable > self.n else "explosive"

    def describe(self) -> str:
        return (f"{self.stable} stable and {self.unstable} unstable roots "
                f"({self.infinite} infinite) for {self.n} variables")


def companion_pencil(A, B, C):
    """The pencil (F, E), both (2N, 2N), whose eigenvalues solve det(A l^2 + B l + C) = 0."""
    A, B, C = (np.asarray(m, dtype=float) for m in (A, B, C))
    n = A.shape[0]
    eye, zero = np.eye(n), np.zeros((n, n))
    E = np.block([[eye, zero], [zero, A]])
    F = np.block([[zero, eye], [-C, -B]])
    return F, E


def count_roots(A, B, C) -> RootCount:
    """Count the stable (|l| < 1) and unstable roots of det(A l^2 + B l + C) = 0.

    Raises ``ValueError`` when the pencil is singular (det vanishes for every l:
    some alpha = beta = 0), where the roots, and the solution, are not defined.
    """
    F, E = companion_pencil(A, B, C)
    _, _, alpha, beta, _, _ = scipy.linalg.ordqz(F, E, sort="iuc", output="complex")
    scale = max(np.linalg.norm(F, 1), np.linalg.norm(E, 1))
    tiny = 100 * np.finfo(float).eps * scale
    if np.any((np.abs(alpha) <= tiny) & (np.abs(beta) <= tiny)):
        raise ValueError("the pencil is singular: det(A l^2 + B l + C) = 0 for every l, "
                         "so the model does not determine x_t (a redundant equation?)")
    stable = int(np.sum(np.abs(alpha) < np.abs(beta)))
    infinite = int(np.sum(np.abs(beta) <= tiny))
    n = F.shape[0] // 2
    return RootCount(stable, 2 * n - stable, infinite, n)


def solve_linear_re_qz(A, B, C, D):
    """P (N, N) and Q (N, K) of x_t = P x_{t-1} + Q eps_t, by ordered QZ (NumPy/scipy).

    Raises ``ValueError`` saying indeterminate or explosive, with the root
    counts, unless exactly N roots are stable.

    Example:
        >>> import numpy as np
        >>> A, B, C, D = [[1.0]], [[-2.5]], [[1.0]], [[1.0]]  # roots 0.5 and 2
        >>> P, Q = solve_linear_re_qz(A, B, C, D)
        >>> round(float(P[0, 0]), 12), round(float(Q[0, 0]), 12)
        (0.5, 0.5)
    """
    A, B, C, D = (np.asarray(m, dtype=float) for m in (A, B, C, D))
    counts = count_roots(A, B, C)
    if counts.verdict != "determinate":
        raise ValueError(f"{counts.verdict}: {counts.describe()}")
    n = A.shape[0]
    F, E = companion_pencil(A, B, C)
    *_, Z = scipy.linalg.ordqz(F, E, sort="iuc", output="real")
    Z11, Z21 = Z[:n, :n], Z[n:, :n]
    if np.linalg.cond(Z11) > 1e12:
        raise ValueError("the stable subspace is not a graph over x_{t-1} "
                         "(Z11 singular): no solution of the form x_t = P x_{t-1}")
    P = np.linalg.solve(Z11.T, Z21.T).T
    Q = -np.linalg.solve(A @ P + B, D)
    return P, Q
