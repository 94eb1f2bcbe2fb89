"""The unrolled small-matrix routines equal the library ones."""

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from lecture_utils.kalman import _linalg as sl


@pytest.mark.parametrize("M", [1, 2, 3, 6])
def test_cholesky_and_solves_match_scipy(rng, M):
    X = rng.normal(size=(M, M))
    S = X @ X.T + M * np.eye(M)
    b = rng.normal(size=(M, 4))
    L = sl.cholesky(jnp.asarray(S))
    L_dense = np.array([[L[i][j] if j <= i else 0.0 for j in range(M)] for i in range(M)])
    np.testing.assert_allclose(L_dense, np.linalg.cholesky(S), rtol=1e-13)
    z = np.stack(sl.solve_lower(L, list(jnp.asarray(b))))
    np.testing.assert_allclose(z, scipy.linalg.solve_triangular(L_dense, b, lower=True),
                               rtol=1e-12)
    x = np.stack(sl.solve_lower_transpose(L, list(jnp.asarray(z))))
    np.testing.assert_allclose(x, np.linalg.solve(S, b), rtol=1e-11)


def test_cholesky_of_indefinite_matrix_gives_nan():
    L = sl.cholesky(jnp.array([[1.0, 2.0], [2.0, 1.0]]))
    assert np.isnan(L[1][1])


@pytest.mark.parametrize("n", [3, 40])  # the broadcast branch and the dot branch
def test_products_match_matmul(rng, n):
    A, B, x = rng.normal(size=(n, 3)), rng.normal(size=(3, n)), rng.normal(size=3)
    np.testing.assert_allclose(sl.matmul(jnp.asarray(A), jnp.asarray(B)), A @ B, rtol=1e-12)
    np.testing.assert_allclose(sl.matvec(jnp.asarray(A), jnp.asarray(x)), A @ x, rtol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 5, 6])
def test_solve_matches_numpy_with_batch_axes_and_pivoting(rng, n):
    A, B = rng.normal(size=(4, 3, n, n)), rng.normal(size=(4, 3, n, 2))
    if n > 1:
        A[0, 0, 0, 0] = 0.0  # needs a row exchange
    np.testing.assert_allclose(sl.solve(jnp.asarray(A), jnp.asarray(B)), np.linalg.solve(A, B),
                               rtol=1e-10, atol=1e-12)
