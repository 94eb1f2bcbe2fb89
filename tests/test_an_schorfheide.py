"""Tests of lecture_utils.an_schorfheide: the model, its solution, likelihood and priors.

Each check is against an answer computed another way:
  * the solution at rho_r = 0 against its closed form (derived by hand in the
    lecture: the minimum-state-variable solution, one 3x3 linear system per
    technology shock and an explicit formula for the policy shock);
  * at 100 determinate prior draws, P and Q against scipy's ordered QZ
    (lecture_utils.linear_re_reference) and the residual of A P^2 + B P + C;
  * determinacy against the Taylor principle's closed-form frontier;
  * the log-likelihood against statsmodels' Kalman filter and the dense
    Gaussian of all 240 observations; its gradient against central differences;
  * the priors against scipy.stats, the Jacobian term against finite differences;
  * the data against macrodata's raw columns.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.stats

import lecture_utils  # noqa: F401  (float64)
from lecture_utils import an_schorfheide as asm
from lecture_utils.data import load_macrodata
from lecture_utils.kalman import kalman_loglik
from lecture_utils.kalman.reference import dense_loglik, statsmodels_kalman
from lecture_utils.linear_re_reference import count_roots, solve_linear_re_qz

#: Near the posterior mode on 1983Q1-2002Q4 (rounded).
NEAR_MODE = asm.ASParams(2.2, 0.9, 1.8, 0.6, 0.2, 3.1, 0.48, 0.83, 0.975, 0.91,
                         0.17, 0.71, 0.2)
#: A point where the expectational solution has to be found (no smoothing).
NO_SMOOTHING = asm.ASParams(2.0, 0.5, 1.5, 0.5, 0.5, 7.0, 0.4, 0.0, 0.8, 0.7, 0.4, 1.0, 0.5)


def _params(p, **changes):
    return jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), p._replace(**changes))


def closed_form_no_smoothing(p):
    """P (5, 5) and Q (5, 3) at rho_r = 0, by hand (NumPy).

    In the output gap x = y - g the IS curve loses g, so g moves y one for one
    and nothing else. An iid policy shock moves x, pi, R only on impact:
    x = -(R)/tau, pi = kappa x, R = psi1 pi + psi2 x + sigma_r eps. The
    technology shock enters through E_t z_{t+1} = rho_z z_t: guessing
    (x, pi, R) = (a, b, c) z_t gives three linear equations.
    """
    tau, kappa, psi1, psi2, rA = (float(v) for v in p[:5])
    rho_g, rho_z, s_r, s_g, s_z = (float(v) for v in p[8:])
    beta = 1 / (1 + rA / 400)
    den = tau + psi1 * kappa + psi2
    M = np.array([[1 - rho_z, -rho_z / tau, 1 / tau],
                  [-kappa, 1 - beta * rho_z, 0.0],
                  [-psi2, -psi1, 1.0]])
    a, b, c = np.linalg.solve(M, [rho_z / tau, 0.0, 0.0])
    P = np.zeros((5, 5))
    P[0, 3] = P[3, 3] = rho_g
    P[:3, 4] = rho_z * np.array([a, b, c])
    P[4, 4] = rho_z
    Q = np.zeros((5, 3))
    Q[:3, 0] = s_r * np.array([-1, -kappa, tau]) / den
    Q[0, 1] = Q[3, 1] = s_g
    Q[:3, 2] = s_z * np.array([a, b, c])
    Q[4, 2] = s_z
    return P, Q


def test_solution_without_smoothing_matches_closed_form():
    for kappa, psi1 in [(0.5, 1.5), (0.1, 3.0), (0.9, 1.05)]:
        p = _params(NO_SMOOTHING, kappa=kappa, psi1=psi1)
        P, Q, ok = asm.solve(p)
        P_hand, Q_hand = closed_form_no_smoothing(p)
        assert bool(ok)
        np.testing.assert_allclose(P, P_hand, rtol=1e-11, atol=1e-13)
        np.testing.assert_allclose(Q, Q_hand, rtol=1e-11, atol=1e-13)


def test_government_spending_moves_output_only():
    """For any rho_r: g shifts y one for one (IS curve in the gap), nothing else moves."""
    irf = asm.impulse_responses(NEAR_MODE, 12)
    h = np.arange(12)
    np.testing.assert_allclose(irf[:, 0, 1], 0.71 * 0.975**h, rtol=1e-11)
    np.testing.assert_allclose(irf[:, 1:3, 1], 0.0, atol=1e-12)


def test_impulse_responses_are_powers_of_P():
    P, Q, _ = asm.solve(NEAR_MODE)
    irf = asm.impulse_responses(NEAR_MODE, 6)
    for h in range(6):
        np.testing.assert_allclose(irf[h], np.linalg.matrix_power(np.asarray(P), h) @ Q,
                                   rtol=1e-12, atol=1e-14)


def _determinate_prior_draws(n, key):
    draws = asm.sample_prior(key, (3 * n,))
    kept = []
    for i in range(3 * n):
        p = jax.tree.map(lambda v: v[i], draws)
        if count_roots(*asm.structural_matrices(p)[:3]).verdict == "determinate":
            kept.append(i)
        if len(kept) == n:
            break
    assert len(kept) == n
    return jax.tree.map(lambda v: v[np.array(kept)], draws)


def test_solver_at_100_determinate_prior_draws():
    draws = _determinate_prior_draws(100, jax.random.key(18))
    P, Q, ok = jax.jit(jax.vmap(asm.solve))(draws)
    assert bool(jnp.all(ok))
    for i in range(100):
        A, B, C, D = (np.asarray(m) for m in asm.structural_matrices(
            jax.tree.map(lambda v: v[i], draws)))
        Pi = np.asarray(P[i])
        residual = A @ Pi @ Pi + B @ Pi + C
        scale = np.linalg.norm(A) * np.linalg.norm(Pi) ** 2 + np.linalg.norm(B) * np.linalg.norm(
            Pi) + np.linalg.norm(C)
        assert np.linalg.norm(residual) <= 1e-12 * scale
        P_qz, Q_qz = solve_linear_re_qz(A, B, C, D)
        np.testing.assert_allclose(Pi, P_qz, rtol=0, atol=1e-10 * max(1, np.abs(P_qz).max()))
        np.testing.assert_allclose(Q[i], Q_qz, rtol=0, atol=1e-10 * max(1, np.abs(Q_qz).max()))


@pytest.mark.parametrize("rho_r", [0.0, 0.5, 0.9])
def test_determinacy_frontier_is_the_taylor_principle(rho_r):
    """Determinate iff kappa (psi1 - 1) + (1 - beta) psi2 > 0 (Woodford 2003, ch. 4)."""
    p = _params(NEAR_MODE, rho_r=rho_r, kappa=0.3, psi2=0.8, rA=2.0)
    beta = 1 / (1 + 2.0 / 400)
    frontier = 1 - (1 - beta) * 0.8 / 0.3
    solve = jax.jit(asm.solve)
    for psi1, expected in [(frontier + 1e-3, True), (frontier - 1e-3, False),
                           (0.5, False), (3.0, True)]:
        q = _params(p, psi1=psi1)
        verdict = count_roots(*asm.structural_matrices(q)[:3]).verdict
        assert (verdict == "determinate") == expected
        assert bool(solve(q)[2]) == expected
    with pytest.raises(ValueError, match="indeterminate"):
        asm.solve(_params(p, psi1=frontier - 1e-3))


def test_loglik_matches_statsmodels_and_dense_gaussian():
    dates, y = asm.load_data()
    model, mu0, Sigma0, const, ok = asm.state_space(NEAR_MODE)
    yd = y - np.asarray(const)
    expected = statsmodels_kalman(model, mu0, Sigma0, yd).loglike()
    np.testing.assert_allclose(asm.loglik(NEAR_MODE, y, jitter=0.0), expected, rtol=1e-9)
    np.testing.assert_allclose(dense_loglik(model, mu0, Sigma0, yd[:20]),
                               kalman_loglik(model, mu0, Sigma0, yd[:20], jitter=0.0),
                               rtol=1e-9)
    # the default jitter moves it by far less than anything that matters
    np.testing.assert_allclose(asm.loglik(NEAR_MODE, y), expected, rtol=1e-7)


def test_stationary_covariance_solves_lyapunov():
    model, _, Sigma0, _, _ = asm.state_space(NEAR_MODE)
    A, C = np.asarray(model.A), np.asarray(model.C)
    expected = scipy.linalg.solve_discrete_lyapunov(A, C @ C.T)
    np.testing.assert_allclose(Sigma0, expected, rtol=1e-9, atol=1e-12 * np.abs(expected).max())


@pytest.fixture(scope="module")
def loglik_and_grad():
    """Value and gradient of the log-likelihood in the natural parameters (13,), compiled once."""
    _, y = asm.load_data()
    f = jax.jit(lambda v: asm.loglik(asm.ASParams(*v), y))
    return f, jax.jit(jax.value_and_grad(f))


def test_loglik_gradient_matches_central_differences_for_all_13_parameters(loglik_and_grad):
    f, value_and_grad = loglik_and_grad
    v = jnp.asarray(NEAR_MODE, dtype=jnp.float64)
    value, grad = value_and_grad(v)
    np.testing.assert_allclose(value, f(v), rtol=1e-13)
    for i, name in enumerate(asm.PARAM_NAMES):
        h = 1e-5 * max(1.0, abs(float(v[i])))
        e = jnp.zeros(13).at[i].set(h)
        fd = (f(v + e) - f(v - e)) / (2 * h)
        np.testing.assert_allclose(grad[i], fd, rtol=1e-5, atol=1e-4, err_msg=name)


def test_solution_derivatives_match_central_differences():
    v = jnp.asarray(NEAR_MODE, dtype=jnp.float64)
    f = jax.jit(lambda v: asm.solve(asm.ASParams(*v))[:2])
    t = jnp.asarray(np.random.default_rng(0).normal(size=13)) * 0.1 * v
    _, (dP, dQ) = jax.jvp(f, (v,), (t,))
    eps = 1e-6
    (Pp, Qp), (Pm, Qm) = f(v + eps * t), f(v - eps * t)
    np.testing.assert_allclose(dP, (Pp - Pm) / (2 * eps), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dQ, (Qp - Qm) / (2 * eps), rtol=1e-6, atol=1e-8)


def test_indeterminate_point_gives_minus_inf_with_finite_gradient(loglik_and_grad):
    _, value_and_grad = loglik_and_grad
    v = jnp.asarray(_params(NEAR_MODE, psi1=0.7), dtype=jnp.float64)
    value, grad = value_and_grad(v)
    assert value == -np.inf and bool(jnp.all(jnp.isfinite(grad)))
    # the log posterior too, and where a coordinate is out of bounds (a
    # sampler's wild trial step: exp(800) would be an infinite parameter)
    _, y = asm.load_data()
    log_post = jax.jit(jax.value_and_grad(asm.log_posterior))
    theta = asm.unconstrain(_params(NEAR_MODE, psi1=0.7))
    wild = [theta] + [asm.unconstrain(NEAR_MODE).at[i].set(sign * 800.0)
                      for i in range(13) for sign in (1, -1)]
    for t in wild:
        value, grad = log_post(t, y)
        assert value == -np.inf and bool(jnp.all(jnp.isfinite(grad)))
    for i in range(13):  # just inside the bound: finite gradients
        for sign in (1, -1):
            t = asm.unconstrain(NEAR_MODE).at[i].set(sign * asm.THETA_BOUND)
            value, grad = log_post(t, y)
            assert not np.isnan(value) and bool(jnp.all(jnp.isfinite(grad))), (i, sign)


def _scipy_prior(name):
    family, a, b = asm.PRIORS[name]
    if family == "gamma":
        return scipy.stats.gamma(a=(a / b) ** 2, scale=b**2 / a)
    if family == "uniform":
        return scipy.stats.uniform(a, b - a)
    if family == "normal":
        return scipy.stats.norm(a, b)
    return None  # invgamma on sigma: sigma^2 ~ InvGamma(nu / 2, scale nu s^2 / 2)


def _scipy_logpdf(name, x):
    dist = _scipy_prior(name)
    if dist is not None:
        return dist.logpdf(x)
    _, s, nu = asm.PRIORS[name]
    return scipy.stats.invgamma(nu / 2, scale=nu * s**2 / 2).logpdf(x**2) + np.log(2 * x)


def test_log_prior_matches_scipy_stats():
    expected = sum(_scipy_logpdf(n, float(getattr(NEAR_MODE, n))) for n in asm.PARAM_NAMES)
    np.testing.assert_allclose(asm.log_prior(NEAR_MODE), expected, rtol=1e-12)
    assert asm.log_prior(_params(NEAR_MODE, kappa=1.2)) == -np.inf


def test_prior_draws_follow_the_priors():
    draws = jax.jit(asm.sample_prior, static_argnums=1)(jax.random.key(5), (20_000,))
    for name in asm.PARAM_NAMES:
        x = np.asarray(getattr(draws, name))
        dist = _scipy_prior(name)
        if dist is None:
            _, s, nu = asm.PRIORS[name]
            cdf = scipy.stats.invgamma(nu / 2, scale=nu * s**2 / 2).cdf
            pvalue = scipy.stats.kstest(x**2, cdf).pvalue
        else:
            pvalue = scipy.stats.kstest(x, dist.cdf).pvalue
        assert pvalue > 1e-3, name


def test_bijection_round_trip_and_log_jacobian_by_finite_differences(rng):
    theta = jnp.asarray(rng.normal(size=13))
    np.testing.assert_allclose(asm.unconstrain(asm.constrain(theta)), theta, rtol=1e-12,
                               atol=1e-12)
    eps = 1e-6
    J = np.empty((13, 13))
    for i in range(13):
        e = np.zeros(13)
        e[i] = eps
        J[:, i] = (np.asarray(asm.constrain(theta + e)) - np.asarray(asm.constrain(theta - e))) / (
            2 * eps)
    np.testing.assert_allclose(asm.log_abs_det_jacobian(theta), np.linalg.slogdet(J)[1],
                               rtol=1e-8)


def test_variance_decomposition_adds_up_and_converges_to_lyapunov():
    vd = asm.variance_decomposition(NEAR_MODE, 400)
    np.testing.assert_allclose(vd.sum(-1), 1.0, rtol=1e-12)
    model, _, _, _, _ = asm.state_space(NEAR_MODE)
    A, C, G = (np.asarray(m) for m in model[:3])
    per_shock = np.stack([G @ scipy.linalg.solve_discrete_lyapunov(A, np.outer(C[:, k], C[:, k]))
                          @ G.T for k in range(3)])  # (K, M, M)
    variances = np.einsum("kmm->mk", per_shock)
    np.testing.assert_allclose(vd[-1], variances / variances.sum(1, keepdims=True), rtol=1e-6)


def test_data_are_macrodata_growth_inflation_and_tbill_rate():
    dates, y = asm.load_data()
    assert y.shape == (80, 3) and dates[0] == 1983.0 and dates[-1] == 2002.75
    _, raw = load_macrodata()
    i = int(np.flatnonzero((raw["year"] == 1983) & (raw["quarter"] == 1))[0])
    pc = raw["realgdp"] / raw["pop"]
    np.testing.assert_allclose(y[0, 0], 100 * np.log(pc[i] / pc[i - 1]), rtol=1e-12)
    np.testing.assert_allclose(y[:, 1], raw["infl"][i:i + 80], rtol=1e-12)
    np.testing.assert_allclose(y[:, 2], raw["tbilrate"][i:i + 80], rtol=1e-12)
    with pytest.raises(ValueError, match="start"):
        asm.load_data(start=1959.0)
