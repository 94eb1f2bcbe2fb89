"""The unrolled small-matrix routines of lecture_utils.kalman._linalg against NumPy/SciPy,
with batch axes, ill-conditioned matrices and failed factorisations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from lecture_utils.kalman import _linalg as sl

EPS = np.finfo(float).eps


def dense(L):
    """Nested-list factor (M x M lists of (*b) arrays) -> (*b, M, M) lower-triangular array."""
    M = len(L)
    batch = np.shape(L[0][0])
    out = np.zeros(batch + (M, M))
    for i in range(M):
        for j in range(i + 1):
            out[..., i, j] = L[i][j]
    return out


def random_spd(rng, M, batch=(), cond=None):
    """(*batch, M, M) symmetric positive definite; eigenvalues spread to ``cond`` if given."""
    X = rng.normal(size=batch + (M, M))
    if cond is None:
        return X @ np.swapaxes(X, -1, -2) + M * np.eye(M)
    Q = np.linalg.qr(X)[0]
    d = np.logspace(0, -np.log10(cond), M)
    return (Q * d[..., None, :]) @ np.swapaxes(Q, -1, -2)


def batch_last(X):
    """(*b, m, n) -> (m, n, *b)."""
    return np.moveaxis(np.moveaxis(X, -2, 0), -1, 1)


@pytest.mark.parametrize("M", [1, 2, 3, 6])
def test_cholesky_and_solves_match_scipy_with_batch_last_axes(rng, M):
    S = random_spd(rng, M, batch=(4, 3))
    b = rng.normal(size=(4, 3, M))
    L, ok = sl.cholesky(jnp.asarray(batch_last(S)))
    assert ok.shape == (4, 3) and ok.dtype == bool and bool(np.all(ok))
    L_dense = dense(L)
    np.testing.assert_allclose(L_dense, np.linalg.cholesky(S), rtol=1e-13, atol=1e-14)
    z = np.stack(sl.solve_lower(L, list(jnp.asarray(np.moveaxis(b, -1, 0)))), axis=-1)
    want = np.stack([[scipy.linalg.solve_triangular(L_dense[i, j], b[i, j], lower=True)
                      for j in range(3)] for i in range(4)])
    np.testing.assert_allclose(z, want, rtol=1e-12)
    x = np.stack(sl.solve_lower_transpose(L, list(jnp.asarray(np.moveaxis(z, -1, 0)))), axis=-1)
    np.testing.assert_allclose(x, np.linalg.solve(S, b[..., None])[..., 0], rtol=1e-11)
    S_inv = np.asarray(sl.inverse_from_cholesky(L))  # (M, M, 4, 3)
    np.testing.assert_allclose(S_inv, batch_last(np.linalg.inv(S)), rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("M", [2, 4, 6])
def test_cholesky_of_ill_conditioned_matrices(rng, M):
    # cond(S) = 1e10. The factor is backward stable: L L' reproduces S to a few eps * ||S||,
    # and the solve's residual is at that level too (its forward error may be ~1e10 eps).
    S = random_spd(rng, M, batch=(5,), cond=1e10)
    assert np.all(np.linalg.cond(S) > 1e9)
    L, ok = sl.cholesky(jnp.asarray(batch_last(S)))
    assert bool(np.all(ok))
    L_dense = dense(L)
    norm = np.linalg.norm(S, axis=(-2, -1))
    err = np.linalg.norm(L_dense @ np.swapaxes(L_dense, -1, -2) - S, axis=(-2, -1))
    assert np.all(err <= 10 * M * EPS * norm), err / norm
    # And close to LAPACK's factor: relative perturbation bound ~ cond * eps.
    ref = np.linalg.cholesky(S)
    rel = np.linalg.norm(L_dense - ref, axis=(-2, -1)) / np.linalg.norm(ref, axis=(-2, -1))
    assert np.all(rel <= 1e10 * EPS), rel
    b = rng.normal(size=(5, M))
    x = np.stack(sl.solve_lower_transpose(L, sl.solve_lower(L, list(jnp.asarray(b.T)))), -1)
    residual = np.linalg.norm(np.einsum("bij,bj->bi", S, x) - b, axis=-1)
    assert np.all(residual <= 100 * M * EPS * norm * np.linalg.norm(x, axis=-1)), residual


def test_failed_cholesky_is_flagged_and_stays_finite():
    L, ok = sl.cholesky(jnp.array([[1.0, 2.0], [2.0, 1.0]]))  # eigenvalues 3 and -1
    assert ok.shape == () and not bool(ok)
    assert float(L[1][1]) == 1.0  # the pivot 1 - 4 = -3 is replaced by 1
    assert np.all(np.isfinite(dense(L)))
    # Batch-last: only the indefinite member is flagged; the others are LAPACK's factors.
    S = np.stack([np.eye(3) * 2.0, np.diag([1.0, -1.0, 1.0]), np.zeros((3, 3)),
                  [[4.0, 2.0, 0.0], [2.0, 5.0, 1.0], [0.0, 1.0, 3.0]]])
    L, ok = sl.cholesky(jnp.asarray(batch_last(S)))
    np.testing.assert_array_equal(ok, [True, False, False, True])
    L_dense = dense(L)
    assert np.all(np.isfinite(L_dense))
    for b in (0, 3):
        np.testing.assert_allclose(L_dense[b], np.linalg.cholesky(S[b]), rtol=1e-14)


def test_failed_cholesky_has_finite_derivatives():
    def f(S):
        L, ok = sl.cholesky(S)
        return sum(L[i][j] for i in range(3) for j in range(i + 1)) + jnp.where(ok, 1.0, 0.0)

    S = jnp.array([[1.0, 2.0, 0.0], [2.0, 1.0, 0.5], [0.0, 0.5, -1.0]])
    assert np.all(np.isfinite(jax.jit(jax.grad(f))(S)))
    assert np.all(np.isfinite(jax.jit(jax.jacrev(jax.grad(f)))(S)))


@pytest.mark.parametrize("n", [3, 40])  # the broadcast branch and the dot branch
def test_products_match_matmul(rng, n):
    A, B, x = rng.normal(size=(n, 3)), rng.normal(size=(3, n)), rng.normal(size=3)
    np.testing.assert_allclose(sl.matmul(jnp.asarray(A), jnp.asarray(B)), A @ B, rtol=1e-12)
    np.testing.assert_allclose(sl.matvec(jnp.asarray(A), jnp.asarray(x)), A @ x, rtol=1e-12)


def test_products_with_trailing_batch_axes(rng):
    A, B, x = rng.normal(size=(4, 3, 5, 2)), rng.normal(size=(3, 6, 5, 2)), rng.normal(
        size=(3, 5, 2))
    np.testing.assert_allclose(sl.matmul(jnp.asarray(A), jnp.asarray(B)),
                               np.einsum("ikab,kjab->ijab", A, B), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(sl.matvec(jnp.asarray(A), jnp.asarray(x)),
                               np.einsum("ikab,kab->iab", A, x), rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(sl.transpose(jnp.asarray(A)), np.swapaxes(A, 0, 1))
    S = rng.normal(size=(3, 3, 5, 2))
    np.testing.assert_allclose(sl.symmetrize(jnp.asarray(S)),
                               0.5 * (S + np.swapaxes(S, 0, 1)), rtol=1e-15)
    np.testing.assert_array_equal(sl.diagonal(jnp.asarray(S)), np.einsum("iiab->iab", S))
    np.testing.assert_array_equal(sl.outer(jnp.asarray(x), jnp.asarray(x)),
                                  np.einsum("iab,jab->ijab", x, x))


@pytest.mark.parametrize("n", [1, 2, 5, 6, 9])
def test_solve_matches_numpy_with_batch_axes_and_pivoting(rng, n):
    A, B = rng.normal(size=(4, 3, n, n)), rng.normal(size=(4, 3, n, 2))
    if n > 1:
        A[0, 0, 0, 0] = 0.0  # needs a row exchange
        A[1, 2] = np.eye(n)[::-1] + 1e-3 * A[1, 2]  # nearly a permutation: exchanges throughout
    # Batch last, as every routine of _linalg takes it.
    X = sl.solve(jnp.asarray(batch_last(A)), jnp.asarray(batch_last(B)))
    np.testing.assert_allclose(X, batch_last(np.linalg.solve(A, B)), rtol=1e-9, atol=1e-11)
    # Without batch axes, one system.
    np.testing.assert_allclose(sl.solve(jnp.asarray(A[0, 0]), jnp.asarray(B[0, 0])),
                               np.linalg.solve(A[0, 0], B[0, 0]), rtol=1e-9, atol=1e-11)
