"""Matrix operations shaped for the tiny matrices of economic state-space models.

One convention throughout: **matrix axes first, batch axes last**. An
``(n, k, *batch)`` array is a stack of ``n x k`` matrices; with no batch axes
it is one matrix. (The filters' stacked outputs, with time as the leading
axis, never pass through these routines.) Batch-last storage lets each
"scalar" operation below run over contiguous numbers, which XLA vectorises
(see :mod:`lecture_utils.kalman.batch`).

On XLA:CPU each ``dot`` or ``cholesky`` inside a ``lax.scan`` body is a
separate call with a fixed overhead far larger than the arithmetic of a 5x5
product. Written as broadcast-multiply-sums, products fuse with the
surrounding elementwise work; for a small innovation dimension M, Cholesky and
triangular solves unrolled at trace time into scalar operations fuse too.
Values equal the library routines' to rounding (see tests/test_small_linalg.py).
"""

import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = [
    "MAX_UNROLLED_M", "cholesky", "diag_matrix", "diagonal", "eye_like", "inverse_from_cholesky",
    "matmul", "matvec", "outer", "solve", "solve_lower", "solve_lower_transpose", "symmetrize",
    "transpose",
]

MAX_UNROLLED_M = 6  # beyond this, trace size grows as M^3: use the library routines
MAX_BROADCAST_PRODUCT = 1000  # n * k * m above which a real dot is faster (N >= 16 or so)


def transpose(A):
    """Swap the two matrix axes of ``A`` (n, k, *batch) -> (k, n, *batch)."""
    return jnp.swapaxes(A, 0, 1)


def symmetrize(A):
    """``(A + A') / 2`` for (n, n, *batch)."""
    return 0.5 * (A + transpose(A))


def diagonal(A):
    """The diagonal (n, *batch) of ``A`` (n, n, *batch)."""
    return jnp.moveaxis(jnp.diagonal(A, axis1=0, axis2=1), -1, 0)


def outer(a, b):
    """``a b'`` (n, k, *batch) from a (n, *batch) and b (k, *batch)."""
    return a[:, None] * b[None, :]


def eye_like(A):
    """The identity with the matrix axes of ``A`` (n, n, *batch), broadcastable to it."""
    n = A.shape[0]
    return jnp.eye(n).reshape((n, n) + (1,) * (A.ndim - 2))


def diag_matrix(d):
    """(n, *batch) diagonal entries -> (n, n, *batch) diagonal matrix."""
    return eye_like(jnp.zeros((d.shape[0], d.shape[0]) + d.shape[1:])) * d[None]


def matmul(A, B):
    """(n, k, *b) @ (k, m, *b): a fusible multiply-and-reduce, or ``@`` for big unbatched."""
    if A.ndim == 2 and A.shape[0] * A.shape[1] * B.shape[1] > MAX_BROADCAST_PRODUCT:
        return A @ B
    if A.ndim > 2:
        return sum(A[:, k, None] * B[None, k, :] for k in range(A.shape[1]))
    return jnp.sum(A[:, :, None] * B[None, :, :], axis=1)


def matvec(A, x):
    """(n, k, *b) @ (k, *b): a fusible multiply-and-reduce, or ``@`` for big unbatched."""
    if A.ndim == 2 and A.size > MAX_BROADCAST_PRODUCT:
        return A @ x
    if A.ndim > 2:
        return sum(A[:, k] * x[None, k] for k in range(A.shape[1]))
    return jnp.sum(A * x[None, :], axis=1)


def cholesky(S):
    """Lower Cholesky factor of a small (M, M, *b) matrix, and whether it exists.

    Returns ``(L, ok)``: ``L`` as nested lists of (*b) arrays, ``ok`` a (*b)
    boolean array, True where every pivot was positive (above M machine
    epsilons of its diagonal entry, so that an exactly singular S whose
    rounding leaves a tiny positive pivot is refused too). Where a pivot is not
    positive (or NaN) it is replaced by 1, so ``L`` stays finite and so do the
    derivatives of everything computed from it: the caller reports the failure
    (the Kalman filters return a log-likelihood of ``-inf``) instead of
    passing NaN on.
    """
    M = S.shape[0]
    L = [[None] * M for _ in range(M)]
    ok = True
    for j in range(M):
        pivot = S[j, j] - sum(L[j][k] ** 2 for k in range(j))
        # Rounding can leave a tiny positive pivot where S is exactly singular.
        positive = pivot > M * np.finfo(np.float64).eps * jnp.abs(S[j, j])
        ok = ok & positive
        L[j][j] = jnp.sqrt(jnp.where(positive, pivot, 1.0))
        for i in range(j + 1, M):
            L[i][j] = (S[i, j] - sum(L[i][k] * L[j][k] for k in range(j))) / L[j][j]
    return L, jnp.asarray(ok) & jnp.ones(S.shape[2:], dtype=bool)


def inverse_from_cholesky(L):
    """``S^{-1}`` (M, M, *b) from the factor ``L`` of :func:`cholesky`."""
    M = len(L)
    batch = jnp.shape(L[0][0])
    unit = list(jnp.broadcast_to(jnp.eye(M).reshape((M, M) + (1,) * len(batch)), (M, M) + batch))
    return jnp.stack(solve_lower_transpose(L, solve_lower(L, unit)))  # S^{-1} is symmetric


def solve_lower(L, b):
    """Solve ``L z = b`` by forward substitution; ``b`` is a list of M rows."""
    z = []
    for i in range(len(L)):
        z.append((b[i] - sum(L[i][k] * z[k] for k in range(i))) / L[i][i])
    return z


def solve_lower_transpose(L, b):
    """Solve ``L^T x = b`` by back substitution; ``b`` is a list of M rows."""
    M = len(L)
    x = [None] * M
    for i in reversed(range(M)):
        x[i] = (b[i] - sum(L[k][i] * x[k] for k in range(i + 1, M))) / L[i][i]
    return x


def solve(A, B):
    """Solve ``A X = B``: Gaussian elimination with partial pivoting, for small n.

    ``A`` is (n, n, *batch) and ``B`` (n, k, *batch); the pivot is chosen per
    batch element. The elimination and the back substitution are
    ``lax.fori_loop`` s over the n columns, so the program is the same size
    for every n and makes no LAPACK call (with jaxlib 0.10.2, a LAPACK solve
    inside the parallel filter sometimes stalled XLA:CPU's runtime for good
    at T >= 4,000).
    """
    n = A.shape[0]
    # Internally the batch axes lead: (*batch, n, n + k).
    aug = jnp.moveaxis(jnp.concatenate([A, B], axis=1), (0, 1), (-2, -1))
    rows = jnp.arange(n)

    def eliminate(j, aug):
        col = aug[..., :, j]
        p = jnp.argmax(jnp.where(rows >= j, jnp.abs(col), -1.0), axis=-1)[..., None]
        row_p = jnp.take_along_axis(aug, p[..., None], axis=-2)  # (..., 1, n + k)
        row_j = lax.dynamic_slice_in_dim(aug, j, 1, axis=-2)
        aug = jnp.where((rows == p)[..., None], row_j, aug)
        aug = jnp.where((rows == j)[..., None], row_p, aug)
        factor = jnp.where(rows > j, aug[..., :, j] / row_p[..., 0, j][..., None], 0.0)
        return aug - factor[..., None] * row_p

    aug = lax.fori_loop(0, n, eliminate, aug)
    U, Y = aug[..., :n], aug[..., n:]

    def substitute(i, X):
        j = n - 1 - i
        U_j = lax.dynamic_slice_in_dim(U, j, 1, axis=-2)[..., 0, :]  # (..., n)
        Y_j = lax.dynamic_slice_in_dim(Y, j, 1, axis=-2)[..., 0, :]
        rhs = Y_j - jnp.einsum("...i,...ik->...k", jnp.where(rows > j, U_j, 0.0), X)
        x_j = rhs / U_j[..., j][..., None]
        return jnp.where((rows == j)[..., None], x_j[..., None, :], X)

    X = lax.fori_loop(0, n, substitute, jnp.zeros_like(Y))
    return jnp.moveaxis(X, (-2, -1), (0, 1))
