"""Tests of lecture_utils.linear_re against independent answers.

Independent answers: systems built from a known stable solvent P (so the answer
is known by construction, also with a singular A), the generalised Schur
reference of :mod:`lecture_utils.linear_re_reference` (scipy's ordqz),
Richardson-extrapolated central differences for every input entry, scipy's
Lyapunov solver and the closed form for a diagonal transition.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from jax.test_util import check_grads

from lecture_utils import linear_re
from lecture_utils.gradcheck import (
    assert_trees_close_normwise,
    central_difference,
    check_vjp,
    random_like,
    tree_dot,
)
from lecture_utils.linear_re import (
    discrete_lyapunov,
    solve_by_iteration,
    solve_linear_re,
    solver_info,
)
from lecture_utils.linear_re_reference import count_roots, solve_linear_re_qz

#: The relative residual the solver must reach at determinate points (issue 18).
RESIDUAL_TOL = 1e-12
#: P and Q against the ordqz reference, norm-wise relative (issue 18).
REFERENCE_RTOL = 1e-10
#: Derivatives against finite differences, norm-wise relative. The differences are
#: Richardson-extrapolated central differences (truncation error ~h^4) along directions
#: of unit norm: plain central differences at a fixed step are unreliable here, as
#: solutions near a singular operator are strongly curved (truncation) and carry
#: rounding noise of about condition number x eps (amplified by 1/h).
FD_RTOL = 1e-6
FD_STEP = 1e-4


# ----- systems with a known answer ----------------------------------------------------------


def matrix_with_spectrum(rng, roots):
    """A real (N, N) matrix with the given real eigenvalues, non-normal."""
    n = len(roots)
    V = rng.normal(size=(n, n)) + 2 * np.eye(n)
    return V @ np.diag(roots) @ np.linalg.inv(V)


def known_system(rng, stable, unstable, n_static=0, k=2):
    """(A, B, C, D, P) with A P^2 + B P + C = 0 for a P with eigenvalues ``stable``.

    A lambda^2 + B lambda + C = (lambda A1 - A0)(lambda I - P): A = A1,
    B = -(A1 P + A0), C = A0 P. The pencil lambda A1 - A0 = L (lambda E - T) R has the
    finite roots ``unstable`` (T upper triangular) and ``n_static`` infinite ones
    (E = diag(1, .., 1, 0, .., 0)), so A is singular when ``n_static`` > 0.
    """
    n = len(stable)
    assert len(unstable) + n_static == n
    P = matrix_with_spectrum(rng, stable)
    L = rng.normal(size=(n, n)) + 2 * np.eye(n)
    R = rng.normal(size=(n, n)) + 2 * np.eye(n)
    T = np.triu(0.3 * rng.normal(size=(n, n)), 1) + np.diag(
        np.concatenate([unstable, np.ones(n_static)]))
    E = np.diag(np.concatenate([np.ones(n - n_static), np.zeros(n_static)]))
    A1, A0 = L @ E @ R, L @ T @ R
    return A1, -(A1 @ P + A0), A0 @ P, rng.normal(size=(n, k)), P


def random_determinate(rng, n, k=2):
    """A random determinate system (rejection on the root count of the reference)."""
    while True:
        A, B, C = rng.normal(size=(n, n)), 3 * rng.normal(size=(n, n)), rng.normal(size=(n, n))
        if count_roots(A, B, C).verdict == "determinate":
            return A, B, C, rng.normal(size=(n, k))


def condition_number(A, B, C, P):
    """Relative condition number of P as a function of (A, B, C): ||K^{-1}|| times the
    residual's scale over ||P||, K the Sylvester operator of the tangent equation.
    A backward-stable solver's relative error is at most about this times eps."""
    n = P.shape[0]
    K = np.kron(A @ P + B, np.eye(n)) + np.kron(A, P.T)
    nP = np.linalg.norm(P)
    scale = np.linalg.norm(A) * nP**2 + np.linalg.norm(B) * nP + np.linalg.norm(C)
    return np.linalg.norm(np.linalg.inv(K), 2) * scale / nP


def relative_residual(A, B, C, P):
    nP = np.linalg.norm(P)
    scale = np.linalg.norm(A) * nP**2 + np.linalg.norm(B) * nP + np.linalg.norm(C)
    return np.linalg.norm(A @ P @ P + B @ P + C) / scale


def finite_difference(f, primals, tangents, h=FD_STEP):
    """(4 D(h/2) - D(h)) / 3, D the central difference of gradcheck: error O(h^4)."""
    coarse = central_difference(f, primals, tangents, h)
    fine = central_difference(f, primals, tangents, h / 2)
    return jax.tree.map(lambda c, f_: (4 * f_ - c) / 3, coarse, fine)


def unit_direction(key, tree):
    """A random direction shaped like ``tree``, of norm one over all leaves."""
    t = random_like(key, tree)
    return jax.tree.map(lambda x: x / jnp.sqrt(tree_dot(t, t)), t)


CASES = {  # name: (stable roots, unstable roots, number of static equations)
    "well separated": ([0.5, -0.3, 0.1, 0.7], [2.0, -3.0, 1.5, 5.0], 0),
    "singular A": ([0.9, 0.5, 0.0, -0.2], [1.5, -2.0], 2),
    "stiff, roots near 1": ([0.999, 0.99, 0.95, 0.5, 0.0], [1.001, 1.01, 1.2], 2),
    "purely static": ([0.8, 0.3], [], 2),
}


@pytest.mark.parametrize("case", CASES)
def test_known_solvent(rng, case):
    stable, unstable, n_static = CASES[case]
    A, B, C, D, P_true = known_system(rng, stable, unstable, n_static)
    sol = solve_linear_re(A, B, C, D)
    assert bool(sol.ok)
    # forming B and C from P_true rounds them: near the unit circle (condition number
    # ~1e6) that alone moves the exact solvent by more than 1e-10
    rtol = max(REFERENCE_RTOL, 10 * condition_number(A, B, C, P_true) * np.finfo(float).eps)
    assert_trees_close_normwise(sol.P, P_true, rtol)
    Q_true = -np.linalg.solve(A @ P_true + B, D)
    assert_trees_close_normwise(sol.Q, Q_true, rtol)
    assert relative_residual(A, B, C, np.asarray(sol.P)) < RESIDUAL_TOL
    np.testing.assert_allclose(np.sort(np.abs(np.linalg.eigvals(sol.P))),
                               np.sort(np.abs(stable)), atol=1e-8)


def reference_rtol(A, B, C, P):
    """1e-10, or the forward-error bound condition number x eps where that is larger:
    two backward-stable solvers (ours and ordqz) then differ by up to about that."""
    return max(REFERENCE_RTOL, condition_number(A, B, C, P) * np.finfo(float).eps)


def test_against_qz_reference_on_random_systems(rng):
    strict, worst_res = 0, 0.0
    for i in range(40):
        n = 3 if i % 2 else 6  # two sizes: two compilations
        A, B, C, D = random_determinate(rng, n)
        if i % 4 < 2:  # a static equation: a zero row of A
            A[rng.integers(n)] = 0.0
            if count_roots(A, B, C).verdict != "determinate":
                continue
        sol = solve_linear_re(A, B, C, D)
        P_ref, Q_ref = solve_linear_re_qz(A, B, C, D)
        rtol = reference_rtol(A, B, C, P_ref)
        strict += rtol == REFERENCE_RTOL
        assert_trees_close_normwise((sol.P, sol.Q), (P_ref, Q_ref), rtol)
        worst_res = max(worst_res, relative_residual(A, B, C, np.asarray(sol.P)))
    assert strict >= 25, strict  # most systems meet the 1e-10 bar itself
    assert worst_res < RESIDUAL_TOL, worst_res


def test_singular_B_against_qz_reference(rng):
    """A variable absent from every date-t equation: cyclic reduction needs the shift."""
    checked = 0
    while checked < 10:
        n = 3
        A, B, C = (rng.normal(size=(n, n)) for _ in range(3))
        D = rng.normal(size=(n, 2))
        B[:, 0] = B[:, 1] + B[:, 2]
        if count_roots(A, B, C).verdict != "determinate":
            continue
        sol = solve_linear_re(A, B, C, D)
        P_ref, Q_ref = solve_linear_re_qz(A, B, C, D)
        assert_trees_close_normwise((sol.P, sol.Q), (P_ref, Q_ref),
                                    reference_rtol(A, B, C, P_ref))
        assert relative_residual(A, B, C, np.asarray(sol.P)) < RESIDUAL_TOL
        checked += 1


# ----- failures ------------------------------------------------------------------------------


def test_explosive_and_indeterminate_flagged(rng):
    # indeterminate: one "unstable" factor root inside the circle -> 5 stable of 4 + 4
    A, B, C, D, _ = known_system(rng, [0.5, 0.2, -0.4, 0.1], [0.6, 2.0, 3.0, -1.5])
    with pytest.raises(ValueError, match="indeterminate.*5 stable and 3 unstable"):
        solve_linear_re(A, B, C, D)
    assert not bool(jax.jit(solve_linear_re)(A, B, C, D).ok)
    # explosive: one root of "P" outside -> 3 stable, 5 unstable
    A, B, C, D, _ = known_system(rng, [1.3, 0.2, -0.4, 0.1], [2.0, 2.0, 3.0, -1.5])
    with pytest.raises(ValueError, match="explosive.*3 stable and 5 unstable"):
        solve_linear_re(A, B, C, D)
    sol = jax.jit(solve_linear_re)(A, B, C, D)
    assert not bool(sol.ok)
    assert np.all(np.asarray(sol.P) == 0) and np.all(np.asarray(sol.Q) == 0)


def test_singular_pencil_raises():
    """det(A l^2 + B l + C) = 0 for every l: no root count, no solution."""
    zero = np.zeros((2, 2))
    with pytest.raises(ValueError, match="pencil is singular"):
        solve_linear_re(zero, zero, zero, np.ones((2, 1)))
    assert not bool(jax.jit(solve_linear_re)(zero, zero, zero, np.ones((2, 1))).ok)


def test_wrong_shapes_raise():
    eye = np.eye(2)
    with pytest.raises(ValueError, match="A must be a square"):
        solve_linear_re(np.ones((2, 3)), eye, eye, eye)
    with pytest.raises(ValueError, match="C must have shape"):
        solve_linear_re(eye, eye, np.eye(3), eye)
    with pytest.raises(ValueError, match="D must have shape"):
        solve_linear_re(eye, eye, eye, np.ones(2))
    with pytest.raises(ValueError, match="W must have shape"):
        discrete_lyapunov(eye, np.eye(3))


# ----- derivatives ----------------------------------------------------------------------------


def solution_of(A, B, C, D):
    sol = solve_linear_re(A, B, C, D)
    return sol.P, sol.Q


@pytest.mark.parametrize("case", ["well separated", "singular A"])
def test_jvp_and_grad_every_entry_against_finite_differences(rng, case):
    """Forward mode (jacfwd, one JVP per input entry) and reverse mode (jacrev, one VJP
    per output entry) against finite differences along every entry of A, B, C, D."""
    A, B, C, D, _ = known_system(rng, *CASES[case])
    primals = tuple(jnp.asarray(m) for m in (A, B, C, D))
    forward = jax.jacfwd(solution_of, argnums=(0, 1, 2, 3))(*primals)
    reverse = jax.jacrev(solution_of, argnums=(0, 1, 2, 3))(*primals)
    for which, M in enumerate(primals):
        for idx in np.ndindex(M.shape):
            tangents = tuple(jnp.zeros_like(m) for m in primals)
            tangents = (*tangents[:which], jnp.zeros_like(M).at[idx].set(1.0),
                        *tangents[which + 1:])
            expected = finite_difference(solution_of, primals, tangents)
            name = f"{'ABCD'[which]}{idx}"
            for jac in (forward, reverse):
                column = tuple(jac[out][which][(..., *idx)] for out in range(2))
                assert_trees_close_normwise(column, expected, FD_RTOL, err_msg=name)


def test_dot_product_identity_and_check_grads(rng, key):
    """<u, J t> by reverse mode equals it by forward mode (exact algebra, so 1e-10), and
    jax's own check_grads in both modes."""
    A, B, C, D, _ = known_system(rng, [0.9, 0.5, -0.2], [1.5, -2.0], 1)
    primals = tuple(jnp.asarray(m) for m in (A, B, C, D))
    out, vjp = jax.vjp(solution_of, *primals)
    for k in jax.random.split(key, 3):
        k_in, k_out = jax.random.split(k)
        t, u = unit_direction(k_in, primals), unit_direction(k_out, out)
        forward = tree_dot(u, jax.jvp(solution_of, primals, t)[1])
        np.testing.assert_allclose(tree_dot(vjp(u), t), forward, rtol=1e-10)
        np.testing.assert_allclose(forward, tree_dot(u, finite_difference(
            solution_of, primals, t)), rtol=FD_RTOL, atol=FD_RTOL)
    check_grads(solution_of, primals, order=1, modes=("fwd", "rev"), eps=1e-6)


def test_second_derivatives_against_finite_differences_of_the_gradient(rng, key):
    """The Hessian (standard errors of the mode) differentiates the custom rule itself."""
    A, B, C, D, _ = known_system(rng, [0.9, 0.5, -0.2], [1.5, -2.0], 1)
    primals = tuple(jnp.asarray(m) for m in (A, B, C, D))
    weights = random_like(key, solution_of(*primals))

    def scalar(*args):
        return tree_dot(weights, solution_of(*args))

    grad = jax.grad(scalar, argnums=(0, 1, 2, 3))
    for k in jax.random.split(jax.random.fold_in(key, 1), 3):
        t = unit_direction(k, primals)
        hvp = jax.jvp(lambda *a: grad(*a), primals, t)[1]
        assert_trees_close_normwise(hvp, finite_difference(grad, primals, t), FD_RTOL)


# ----- failures under transformations -------------------------------------------------------------


def gaussian_loglik(A, B, C, D, y):
    """log N(y; 0, Sigma + I) of a stationary draw: -inf where the model is not determinate."""
    sol = solve_linear_re(A, B, C, D)
    S = discrete_lyapunov(sol.P, sol.Q @ sol.Q.T) + jnp.eye(A.shape[0])
    value = jax.scipy.stats.multivariate_normal.logpdf(y, jnp.zeros_like(y), S)
    return jnp.where(sol.ok, value, -jnp.inf)


def test_finite_gradient_where_indeterminate(rng):
    A, B, C, D, _ = known_system(rng, [0.5, 0.2, -0.4], [0.6, 2.0, 3.0])
    y = jnp.asarray(rng.normal(size=3))
    value, grads = jax.jit(jax.value_and_grad(gaussian_loglik, argnums=(0, 1, 2, 3)))(
        A, B, C, D, y)
    assert value == -np.inf
    for g in grads:
        assert np.all(np.isfinite(g)) and np.all(np.asarray(g) == 0.0)
    # jvp too
    _, tangent = jax.jvp(lambda b: solution_of(A, b, C, D), (jnp.asarray(B),),
                         (jnp.ones_like(B),))
    assert all(np.all(np.asarray(t) == 0.0) for t in tangent)


def test_vmap_batch_with_a_failing_member(rng):
    """Replacing member 2 by an indeterminate system changes member 2 only, bit for bit."""
    systems = [known_system(rng, [0.5, 0.2, -0.4], [2.0, 3.0, -1.5]) for _ in range(4)]
    A, B, C, D = (np.stack(m) for m in list(zip(*systems))[:4])
    bad = known_system(rng, [0.5, 0.2, -0.4], [0.6, 2.0, 3.0])  # indeterminate
    A_bad, B_bad, C_bad, D_bad = (m.copy() for m in (A, B, C, D))
    for stacked, member in zip((A_bad, B_bad, C_bad, D_bad), bad):
        stacked[2] = member
    y = jnp.asarray(rng.normal(size=3))
    solve = jax.jit(jax.vmap(solve_linear_re))
    grad = jax.jit(jax.vmap(jax.grad(gaussian_loglik, argnums=(0, 1, 2, 3)),
                            in_axes=(0, 0, 0, 0, None)))
    good, failing = solve(A, B, C, D), solve(A_bad, B_bad, C_bad, D_bad)
    g_good, g_failing = grad(A, B, C, D, y), grad(A_bad, B_bad, C_bad, D_bad, y)
    assert np.asarray(good.ok).tolist() == [True] * 4
    assert np.asarray(failing.ok).tolist() == [True, True, False, True]
    keep = np.array([0, 1, 3])
    for a, b in zip((*good, *g_good), (*failing, *g_failing)):
        np.testing.assert_array_equal(np.asarray(a)[keep], np.asarray(b)[keep])
        assert np.all(np.isfinite(b))
    for P_i, (_, _, _, _, P_true) in zip(good.P, systems):
        assert_trees_close_normwise(P_i, P_true, REFERENCE_RTOL)


# ----- the naive iteration ---------------------------------------------------------------------------


def test_iteration_converges_fast_but_not_near_unit_roots(rng):
    # fast: rho(P) rho(F) = 0.5 / 2 = 0.25 -> 60 steps reach rounding
    A, B, C, D, P_true = known_system(rng, [0.5, 0.2, -0.4], [2.0, 3.0, -4.0])
    assert_trees_close_normwise(solve_by_iteration(A, B, C, D).P, P_true, 1e-12)
    # slow, scalar: x_t = E_t x_{t+1} ... with roots p = 0.99 and u = 1.01, the iteration
    # P <- p u / (p + u - P) from 0 contracts by p / u = 0.98 per step near P = p
    p, u = 0.99, 1.01
    system = ([[1.0]], [[-(p + u)]], [[p * u]], [[1.0]])
    err = abs(float(solve_by_iteration(*system).P[0, 0]) - p) / p
    assert err > 5e-3, err  # visibly wrong after 60 steps, and nothing in the output says so
    assert abs(float(solve_by_iteration(*system, num_iter=3000).P[0, 0]) - p) < 1e-12
    assert abs(float(solve_linear_re(*system).P[0, 0]) - p) < 1e-14
    # slow, 3 variables with roots 0.999 and 1.001 near the circle
    A, B, C, D, P_true = known_system(rng, [0.999, 0.2, -0.4], [1.001, 3.0, -4.0])
    err = np.linalg.norm(solve_by_iteration(A, B, C, D).P - P_true) / np.linalg.norm(P_true)
    assert err > 1e-3, err
    rtol = max(REFERENCE_RTOL, 10 * condition_number(A, B, C, P_true) * np.finfo(float).eps)
    assert_trees_close_normwise(solve_linear_re(A, B, C, D).P, P_true, rtol)


# ----- Lyapunov -------------------------------------------------------------------------------


@pytest.mark.parametrize("rho", [0.5, 0.999, 0.9999])
def test_discrete_lyapunov_against_scipy_and_closed_form(rng, rho):
    n = 4
    roots = np.array([rho, 0.5 * rho, -0.3, 0.1])
    W = rng.normal(size=(n, 2))
    W = W @ W.T + 0.1 * np.eye(n)
    # diagonal P: Sigma_ij = W_ij / (1 - p_i p_j), no solver involved
    Sigma_diag = discrete_lyapunov(np.diag(roots), W)
    closed = W / (1 - np.outer(roots, roots))
    assert_trees_close_normwise(Sigma_diag, closed, 1e-13 / (1 - rho**2))
    # non-normal P against scipy's bilinear-transformation solver (a different algorithm):
    # both are within about cond(I - P kron P) x eps of the truth (1/(1 - rho^2) for a
    # normal P; more when P's eigenvectors are far from orthogonal)
    P = matrix_with_spectrum(rng, roots)
    Sigma = np.asarray(discrete_lyapunov(P, W))
    ref = scipy.linalg.solve_discrete_lyapunov(P, W, method="bilinear")
    err = np.linalg.norm(Sigma - ref) / np.linalg.norm(ref)
    cond = np.linalg.cond(np.eye(n * n) - np.kron(P, P))
    assert err < 10 * cond * np.finfo(float).eps, (err, cond)
    scale = (np.linalg.norm(P) ** 2 + 1) * np.linalg.norm(Sigma) + np.linalg.norm(W)
    assert np.linalg.norm(P @ Sigma @ P.T + W - Sigma) < 1e-14 * scale  # backward error
    np.testing.assert_array_equal(Sigma, Sigma.T)


def test_discrete_lyapunov_derivatives(rng, key):
    P = matrix_with_spectrum(rng, [0.99, 0.5, -0.3])
    W = rng.normal(size=(3, 3))
    primals = (jnp.asarray(P), jnp.asarray(W @ W.T))
    check_grads(discrete_lyapunov, primals, order=1, modes=("fwd", "rev"), eps=1e-6)
    for k in jax.random.split(key, 3):
        t = unit_direction(k, primals)
        assert_trees_close_normwise(jax.jvp(discrete_lyapunov, primals, t)[1],
                                    finite_difference(discrete_lyapunov, primals, t), FD_RTOL)
    check_vjp(discrete_lyapunov, primals, key=key, rtol=FD_RTOL)


def test_solver_info_reports_convergence(rng):
    A, B, C, _, _ = known_system(rng, *CASES["stiff, roots near 1"][:2], 2)
    info = solver_info(A, B, C)
    assert bool(info.ok) and 1 <= int(info.cr_steps) < 30
    assert float(info.residual) < RESIDUAL_TOL
    np.testing.assert_allclose(float(info.rho_P), 0.999, atol=1e-8)
    np.testing.assert_allclose(float(info.rho_F), 1 / 1.001, atol=1e-8)


def test_unconverged_solver_raises_saying_so(rng, monkeypatch):
    """The eager error where the roots say determinate but the solver failed: forced by
    capping cyclic reduction at two steps on the stiff system (it needs 15)."""
    A, B, C, D, _ = known_system(rng, *CASES["stiff, roots near 1"])
    monkeypatch.setattr(linear_re, "MAX_CR_STEPS", 2)
    jax.clear_caches()  # the cap is read when tracing
    try:
        with pytest.raises(ValueError, match="determinate .5 stable and 5 unstable.*limit of 2"):
            solve_linear_re(A, B, C, D)
    finally:
        monkeypatch.undo()
        jax.clear_caches()
    assert bool(solve_linear_re(A, B, C, D).ok)
