"""An independent NumPy/scipy pipeline for lecture 5's An-Schorfheide posterior.

Its log posterior calls no JAX: the model's equations, the priors, the data
and the change of variables are written again, in NumPy and scipy.stats, from
Herbst and Schorfheide (2015, ch. 2); the rational-expectations solution is
the generalised Schur (QZ) reference ``solve_linear_re_qz`` and the
likelihood statsmodels' exact Kalman filter, checked against the textbook
NumPy filter ``kalman_filter_numpy`` of ``lecture_utils.kalman.reference``.
Agreement with the JAX pipeline of ``lecture_utils.an_schorfheide`` is
evidence, not repetition.

``main()`` runs the validation of lecture 5 (section "Validation"):

1. the log posterior of both pipelines at prior draws (equal up to rounding);
2. the posterior mode (of the density of the unconstrained parameters) found
   by scipy's BFGS with finite-difference gradients against the JAX L-BFGS
   mode with exact gradients (``--mode-only`` redoes this for a committed run);
3. a long random-walk Metropolis chain (plain NumPy, proposal from the
   inverse Hessian at the mode, by finite differences of this module's log
   posterior) against NUTS (``lecture_utils.sampling.run_nuts``): posterior
   means and standard deviations of all 13 parameters, z-scores with both
   Monte Carlo standard errors (ArviZ).

Run:  python benchmarks/nk_reference.py   (about half an hour on 2 shared cores)
Writes benchmarks/results/nk_reference.json and nk_reference.md;
tests/test_nk_benchmarks.py checks them and re-runs small pieces.

Parameters, in the order of lecture 5 (natural units):
tau, kappa, psi1, psi2, rA, pi_star, gamma_Q, rho_R, rho_g, rho_z,
sigma_R, sigma_g, sigma_z.
"""

import math

import numpy as np
import scipy.linalg
import scipy.optimize
import scipy.special
import scipy.stats

PARAM_NAMES = ("tau", "kappa", "psi1", "psi2", "rA", "pi_star", "gamma_Q",
               "rho_R", "rho_g", "rho_z", "sigma_R", "sigma_g", "sigma_z")
D = len(PARAM_NAMES)

# Which parameters live on (0, inf), on (0, 1), on the real line.
POSITIVE = np.array([0, 2, 3, 4, 5, 10, 11, 12])
UNIT = np.array([1, 7, 8, 9])
REAL = np.array([6])

# Priors of Herbst and Schorfheide (2015, Table 2.2), after An and Schorfheide (2007):
# Gamma(mean, sd), Uniform(0, 1), Normal(mean, sd), and for the shock standard
# deviations the inverse gamma of their appendix, p(s) ~ s^{-nu-1} exp(-nu s2 / (2 s^2)).
GAMMA_INDEX, GAMMA_MEAN_SD = np.array([0, 2, 3, 4, 5]), np.array(
    [(2.0, 0.5), (1.5, 0.25), (0.5, 0.25), (0.5, 0.5), (7.0, 2.0)])
NORMAL_INDEX, NORMAL_MEAN_SD = np.array([6]), np.array([(0.4, 0.2)])
INV_GAMMA_INDEX, INV_GAMMA_S_NU = np.array([10, 11, 12]), np.array(
    [(0.4, 4.0), (1.0, 4.0), (0.5, 4.0)])


# ----- data ----------------------------------------------------------------------------

def load_data():
    """(80, 3) observations 1983Q1-2002Q4, read from statsmodels' macrodata directly.

    Columns: 100 Delta log(realgdp / pop) (quarterly per cent), ``infl``
    (annualised per cent), ``tbilrate`` (annualised per cent).
    """
    import statsmodels.api as sm

    df = sm.datasets.macrodata.load_pandas().data
    quarter = df["year"].to_numpy() * 4 + df["quarter"].to_numpy() - 1
    first, last = 1983 * 4, 2002 * 4 + 3
    rows = np.flatnonzero((quarter >= first - 1) & (quarter <= last))
    log_gdp_pc = np.log(df["realgdp"].to_numpy() / df["pop"].to_numpy())[rows]
    growth = 100 * np.diff(log_gdp_pc)
    return np.column_stack([growth, df["infl"].to_numpy()[rows[1:]],
                            df["tbilrate"].to_numpy()[rows[1:]]])


# ----- the model -----------------------------------------------------------------------

def structural_matrices(p):
    """``A E_t x_{t+1} + B x_t + C x_{t-1} + D eps_t = 0`` for x = (y, pi, R, g, z).

    Rows: the dynamic IS curve, the Phillips curve, the Taylor rule, the two
    AR(1) shocks; eps = (eps_R, eps_g, eps_z) standard normal. Returns
    ``(A, B, C, D)`` of shapes (5, 5), (5, 5), (5, 5), (5, 3).
    """
    tau, kappa, psi1, psi2, rA, _, _, rho_R, rho_g, rho_z, s_R, s_g, s_z = p
    beta = 1 / (1 + rA / 400)
    A, B, C, Dm = np.zeros((5, 5)), np.zeros((5, 5)), np.zeros((5, 5)), np.zeros((5, 3))
    # y_t = E y_{t+1} - (R_t - E pi_{t+1} - E z_{t+1}) / tau + g_t - E g_{t+1}
    A[0] = [-1, -1 / tau, 0, 1, -1 / tau]
    B[0] = [1, 0, 1 / tau, -1, 0]
    # pi_t = beta E pi_{t+1} + kappa (y_t - g_t)
    A[1, 1] = -beta
    B[1] = [-kappa, 1, 0, kappa, 0]
    # R_t = rho_R R_{t-1} + (1 - rho_R) (psi1 pi_t + psi2 (y_t - g_t)) + s_R eps_R
    B[2] = [-(1 - rho_R) * psi2, -(1 - rho_R) * psi1, 1, (1 - rho_R) * psi2, 0]
    C[2, 2], Dm[2, 0] = -rho_R, -s_R
    # g_t = rho_g g_{t-1} + s_g eps_g ;  z_t = rho_z z_{t-1} + s_z eps_z
    B[3, 3], C[3, 3], Dm[3, 1] = 1, -rho_g, -s_g
    B[4, 4], C[4, 4], Dm[4, 2] = 1, -rho_z, -s_z
    return A, B, C, Dm


def solution(p):
    """``(P (5, 5), Q (5, 3))`` by ordered QZ; ``ValueError`` if not determinate."""
    from lecture_utils.linear_re_reference import solve_linear_re_qz

    return solve_linear_re_qz(*structural_matrices(p))


def state_space(p):
    """The state-space form on ``s_t = (x_t, y_{t-1})`` (6,), in the book's timing.

    ``s_{t+1} = T s_t + R eps_{t+1}``; ``YOBS_t = const + Z s_{t+1}``, no
    measurement error; ``s_0`` from the stationary distribution, its covariance
    by ``scipy.linalg.solve_discrete_lyapunov``. Units: states in percent;
    ``YGR = gamma_Q + y_t - y_{t-1} + z_t``, ``INFL = pi* + 4 pi_t``,
    ``INT = pi* + rA + 4 gamma_Q + 4 R_t``.

    Returns:
        ``(LSSModel, mu0 (6,), Sigma0 (6, 6), const (3,))``.
    """
    from lecture_utils.lss import LSSModel

    P, Q = solution(p)
    Tm = np.zeros((6, 6))
    Tm[:5, :5], Tm[5, 0] = P, 1.0
    R = np.vstack([Q, np.zeros((1, 3))])
    Z = np.zeros((3, 6))
    Z[0, [0, 4, 5]] = 1.0, 1.0, -1.0
    Z[1, 1] = Z[2, 2] = 4.0
    _, _, _, _, rA, pi_star, gamma_Q, *_ = p
    const = np.array([gamma_Q, pi_star, pi_star + rA + 4 * gamma_Q])
    Sigma0 = scipy.linalg.solve_discrete_lyapunov(Tm, R @ R.T)
    return LSSModel(Tm, R, Z, np.zeros((3, 1))), np.zeros(6), 0.5 * (Sigma0 + Sigma0.T), const


def loglik(p, y, *, method="statsmodels", jitter=0.0):
    """Log-likelihood of ``y`` (T, 3); ``-inf`` where the model is not determinate.

    ``method="statsmodels"``: statsmodels' Cython filter, exact throughout
    (``tolerance=0``), the fast one the mode and the Metropolis chain use;
    ``"numpy"``: the textbook NumPy filter ``kalman_filter_numpy``, the slow
    one that checks it, with ``jitter`` (relative, on the diagonal of S_t).
    JAX's ``kalman_loglik`` adds 1e-8 by default: with as many shocks as
    observables and no measurement error S_t can be ill conditioned, and
    that jitter then moves the log-likelihood by up to about 1e-6 relative
    at prior draws, so a comparison with JAX passes ``jitter=1e-8``.
    """
    from lecture_utils.kalman.reference import kalman_filter_numpy, statsmodels_kalman

    try:
        model, mu0, Sigma0, const = state_space(p)
    except ValueError:  # indeterminate or explosive
        return -np.inf
    if method == "numpy":
        return float(kalman_filter_numpy(model, mu0, Sigma0, y - const, jitter=jitter).loglik)
    if method != "statsmodels" or jitter != 0:
        raise ValueError(f"method must be 'statsmodels' (no jitter) or 'numpy', got {method!r} "
                         f"with jitter={jitter}")
    return float(statsmodels_kalman(model, mu0, Sigma0, y - const).loglike())


def log_prior(p):
    """Sum of the 13 prior log densities (scipy.stats); ``-inf`` outside the support.

    Not truncated to the determinacy region (the likelihood is ``-inf`` there,
    so the posterior is the same; only the normalising constant differs).
    """
    p = np.asarray(p, dtype=float)
    if np.any(p[POSITIVE] <= 0) or np.any((p[UNIT] <= 0) | (p[UNIT] >= 1)):
        return -np.inf
    mean, sd = GAMMA_MEAN_SD.T
    total = np.sum(scipy.stats.gamma.logpdf(p[GAMMA_INDEX], (mean / sd) ** 2,
                                            scale=sd**2 / mean))
    total += np.sum(scipy.stats.norm.logpdf(p[NORMAL_INDEX], *NORMAL_MEAN_SD.T))
    # uniform(0, 1) priors: log density 0 inside the support
    # sigma^2 ~ InvGamma(nu / 2, scale nu s^2 / 2), and d sigma^2 / d sigma = 2 sigma
    s, nu = INV_GAMMA_S_NU.T
    sigma = p[INV_GAMMA_INDEX]
    total += np.sum(scipy.stats.invgamma.logpdf(sigma**2, nu / 2, scale=nu * s**2 / 2)
                    + np.log(2 * sigma))
    return float(total)


def log_posterior_natural(p, y):
    """Unnormalised log posterior density of the natural parameters ``p`` (13,)."""
    lp = log_prior(p)
    return lp + loglik(p, y) if np.isfinite(lp) else -np.inf


# ----- unconstrained coordinates of this module (log, logit) ------------------------------

def to_natural(u):
    """Natural parameters (..., 13) from unconstrained ``u`` (..., 13): exp, logistic, identity."""
    u = np.asarray(u, dtype=float)
    p = u.copy()
    p[..., POSITIVE] = np.exp(u[..., POSITIVE])
    p[..., UNIT] = scipy.special.expit(u[..., UNIT])
    return p


def to_unconstrained(p):
    """Inverse of :func:`to_natural`."""
    p = np.asarray(p, dtype=float)
    u = p.copy()
    u[POSITIVE] = np.log(p[POSITIVE])
    u[UNIT] = scipy.special.logit(p[UNIT])
    return u


def log_jacobian(u):
    """log |det d p / d u| of :func:`to_natural`: u_i for exp, log p (1 - p) for the logistic."""
    u = np.asarray(u, dtype=float)
    q = scipy.special.expit(u[UNIT])
    return float(np.sum(u[POSITIVE]) + np.sum(np.log(q) + np.log1p(-q)))


def log_posterior_unconstrained(u, y):
    """Log posterior density of ``u``: the natural one plus the log-Jacobian."""
    return log_posterior_natural(to_natural(u), y) + log_jacobian(u)


# ----- the mode, the Hessian, random-walk Metropolis --------------------------------------

#: Bounds of the natural parameters for L-BFGS-B (a hair inside the supports).
BOUNDS = [(1e-6, None) if i in POSITIVE else (1e-6, 1 - 1e-6) if i in UNIT else (None, None)
          for i in range(D)]


def posterior_mode(y, start):
    """Mode of the natural-parameter posterior density by scipy's L-BFGS-B.

    Gradients by central differences of :func:`log_posterior_natural`; bounds
    keep the parameters in their supports. No change of variables is involved,
    so the answer does not depend on one.

    Returns:
        scipy's ``OptimizeResult`` (``x``: the mode (13,), ``fun``: minus the
        log posterior there).
    """
    def objective(p):
        value = -log_posterior_natural(p, y)
        return value if np.isfinite(value) else 1e10

    return scipy.optimize.minimize(objective, np.asarray(start, float), method="L-BFGS-B",
                                   jac="3-point", bounds=BOUNDS,
                                   options=dict(maxiter=2000, ftol=1e-15, gtol=1e-7))


def hessian(f, x, step=1e-4):
    """Hessian (d, d) of ``f`` at ``x`` by central differences with relative ``step``."""
    x = np.asarray(x, dtype=float)
    h = step * np.maximum(1.0, np.abs(x))
    d = x.size
    H = np.empty((d, d))
    for i in range(d):
        for j in range(i, d):
            e_i, e_j = np.eye(d)[i] * h[i], np.eye(d)[j] * h[j]
            H[i, j] = H[j, i] = (f(x + e_i + e_j) - f(x + e_i - e_j)
                                 - f(x - e_i + e_j) + f(x - e_i - e_j)) / (4 * h[i] * h[j])
    return H


def random_walk_metropolis(logpdf, start, cov, num_draws, rng):
    """A Gaussian random-walk Metropolis chain, in plain NumPy.

    Proposal ``x' = x + L z``, ``L L' = cov``, ``z`` standard normal; accepted
    with probability ``min(1, exp(logpdf(x') - logpdf(x)))``.

    Returns:
        ``(draws (num_draws, d), acceptance rate)``.
    """
    chol = np.linalg.cholesky(cov)
    x = np.array(start, dtype=float)
    lp = logpdf(x)
    if not np.isfinite(lp):
        raise ValueError(f"logpdf(start) must be finite, got {lp}")
    draws, accepted = np.empty((num_draws, x.size)), 0
    for i in range(num_draws):
        proposal = x + chol @ rng.normal(size=x.size)
        lp_proposal = logpdf(proposal)
        if np.log(rng.uniform()) < lp_proposal - lp:
            x, lp, accepted = proposal, lp_proposal, accepted + 1
        draws[i] = x
    return draws, accepted / num_draws


# ----- the validation run ----------------------------------------------------------------

SEED = 20261130
NUM_PRIOR_POINTS = 20   # points where the two log posteriors are compared
RWMH_CHAINS = 4
RWMH_DRAWS = 30_000     # per chain, after RWMH_BURN_IN
RWMH_BURN_IN = 3_000
RWMH_PROCESSES = 2      # chains run in this many processes at once
RWMH_SCALE = 2.38**2 / D  # Roberts, Gelman and Gilks (1997)
NUTS_CHAINS, NUTS_WARMUP, NUTS_DRAWS = 4, 1000, 2000
NUM_STORED_DRAWS = 20   # first draws of RWMH chain 0, kept so a test can re-run them
Z_FAMILY_LEVEL = 0.01   # two-sided, Bonferroni over 2 D comparisons


START = np.array([2.0, 0.5, 1.5, 0.5, 0.5, 7.0, 0.4, 0.5, 0.5, 0.5, 0.5, 1.0, 0.6])
"""Where the modes are searched from: the prior means (a round 0.6 for sigma_z)."""


def compare_modes(y, u_start, cov_u, log_posterior_jax, jnp):
    """The mode of the log posterior of u (log and logit coordinates, the Jacobian
    included) by scipy's BFGS with central-difference gradients (polishing ``u_start``),
    against ``lbfgs_minimize`` with JAX's exact gradients from START's coordinates.

    Differences are measured in posterior standard deviations of u, from ``cov_u``
    (the inverse Hessian at the mode). The natural density's mode is no use here:
    it lies on the boundary (kappa = 1, rA = 0, rho_g = 1), where nothing is smooth.
    """
    from lecture_utils.optim import lbfgs_minimize

    ref = scipy.optimize.minimize(lambda u: -log_posterior_unconstrained(u, y), u_start,
                                  method="BFGS", jac="3-point", options=dict(gtol=1e-7))
    fit = lbfgs_minimize(lambda th: -log_posterior_jax(th) / len(y),
                         jnp.asarray(to_unconstrained(START)), tol=1e-9)
    u_jax = np.asarray(fit.params)
    sd_u = np.sqrt(np.diag(cov_u))
    diff = np.abs(ref.x - u_jax) / sd_u
    print(f"modes of the density of u: scipy {ref.message!r}, JAX {fit.status}; largest "
          f"difference {diff.max():.1e} sd", flush=True)
    return {"start": START.tolist(), "reference_u": ref.x.tolist(), "jax_u": u_jax.tolist(),
            "sd_u": sd_u.tolist(), "reference": to_natural(ref.x).tolist(),
            "jax": to_natural(u_jax).tolist(), "max_abs_diff_in_sd": float(diff.max()),
            "reference_log_density": float(-ref.fun),
            "jax_log_density": float(log_posterior_unconstrained(u_jax, y)),
            "scipy_message": str(ref.message), "jax_status": fit.status}


def z_critical(count=2 * D, level=Z_FAMILY_LEVEL):
    """Two-sided Bonferroni critical value of ``count`` z-scores at family-wise ``level``."""
    return float(scipy.stats.norm.ppf(1 - level / (2 * count)))


def rwmh_chain(y, start, cov, chain):
    """RWMH chain ``chain`` (seeded by (SEED, chain)) in this module's coordinates u."""
    rng = np.random.default_rng([SEED, chain])
    return random_walk_metropolis(lambda u: log_posterior_unconstrained(u, y), start, cov,
                                  RWMH_BURN_IN + RWMH_DRAWS, rng)


def jax_pipeline(y):
    """The JAX side: its module, jax, jax.numpy and its log posterior of theta given ``y``."""
    import jax
    import jax.numpy as jnp

    from lecture_utils import an_schorfheide as nk

    y = jnp.asarray(y)

    def log_posterior(theta):
        return nk.log_posterior(theta, y)

    return nk, jax, jnp, log_posterior


def compare_pointwise(y, nk, jax, jnp, log_posterior_jax, count=NUM_PRIOR_POINTS):
    """Largest relative difference of the two log posteriors at determinate prior draws.

    This module's side runs the NumPy filter with JAX's jitter (1e-8) and adds
    its own log-Jacobian, so both sides compute the density of theta in JAX's
    coordinates (log and logit, as here).
    """
    draws = nk.sample_prior(jax.random.key(SEED), (4 * count,))
    points = np.stack([np.asarray(v) for v in draws], axis=1)
    worst, used = 0.0, 0
    for p in points:
        ours_here = loglik(p, y, method="numpy", jitter=1e-8)
        if not np.isfinite(ours_here):
            continue
        u = to_unconstrained(p)
        mine = log_prior(p) + ours_here + log_jacobian(u)
        theirs = float(log_posterior_jax(jnp.asarray(u)))
        worst = max(worst, abs(mine - theirs) / abs(mine))
        used += 1
        if used == count:
            break
    return worst, used


def summaries(draws_natural):
    """ArviZ summary (mean, sd, MCSEs, ESS, R-hat) of (C, S, D) natural-parameter draws."""
    from lecture_utils.sampling import summary

    return summary(np.asarray(draws_natural), list(PARAM_NAMES))


def agreement_table(nuts, rwmh):
    """Per parameter: both means and sds, their MCSEs and z-scores."""
    rows = []
    for name in PARAM_NAMES:
        a, b = nuts.loc[name], rwmh.loc[name]
        rows.append(dict(
            parameter=name, nuts_mean=float(a["mean"]), rwmh_mean=float(b["mean"]),
            nuts_mcse_mean=float(a["mcse_mean"]), rwmh_mcse_mean=float(b["mcse_mean"]),
            z_mean=float((a["mean"] - b["mean"]) / np.hypot(a["mcse_mean"], b["mcse_mean"])),
            nuts_sd=float(a["sd"]), rwmh_sd=float(b["sd"]),
            nuts_mcse_sd=float(a["mcse_sd"]), rwmh_mcse_sd=float(b["mcse_sd"]),
            z_sd=float((a["sd"] - b["sd"]) / np.hypot(a["mcse_sd"], b["mcse_sd"])),
            nuts_ess_bulk=float(a["ess_bulk"]), rwmh_ess_bulk=float(b["ess_bulk"]),
            nuts_r_hat=float(a["r_hat"]), rwmh_r_hat=float(b["r_hat"])))
    return rows


def markdown(result):
    m = result["mode"]
    lines = [
        "# The New Keynesian posterior by an independent NumPy/scipy pipeline",
        "",
        f"Date: {result['date']}. {result['machine']}.",
        "",
        "Lecture 5's posterior (An-Schorfheide model, statsmodels macrodata 1983Q1-2002Q4) "
        "computed twice: by the JAX pipeline (`lecture_utils.an_schorfheide`: "
        "`solve_linear_re`, `kalman_loglik`, exact gradients) and by "
        "`benchmarks/nk_reference.py`, which writes the equations, priors, data and change "
        "of variables again in NumPy/scipy.stats, solves by ordered QZ "
        "(`solve_linear_re_qz`) and filters with statsmodels' exact Kalman filter "
        "(checked against the textbook NumPy filter).",
        "",
        f"**Log posterior.** At {result['pointwise']['points']} determinate prior draws the two "
        f"pipelines agree to {result['pointwise']['max_rel_diff']:.1e} relative; statsmodels' "
        f"filter and the NumPy filter to {result['pointwise']['statsmodels_vs_numpy']:.1e}.",
        "",
        "**Mode** of the log posterior of the unconstrained parameters (log and logit "
        "coordinates, the log-Jacobian included; the density of the natural parameters "
        "peaks on the boundary of the support, at kappa = 1, rA = 0 and rho_g = 1): "
        "scipy's BFGS with central-difference gradients on this module's log posterior, "
        "against `lbfgs_minimize` with JAX's exact gradients on "
        f"`an_schorfheide.log_posterior` (status: {m['jax_status']}). Largest "
        f"difference {m['max_abs_diff_in_sd']:.1e} posterior standard deviations (of the "
        "unconstrained coordinate; sd from the inverse Hessian at the mode); log posterior "
        f"at the modes {m['reference_log_density']:.8f} (scipy) and "
        f"{m['jax_log_density']:.8f} (JAX's mode, evaluated by this module).",
        "",
        "| parameter | mode, scipy | mode, JAX | difference / sd |",
        "|---|---|---|---|",
    ]
    for i, name in enumerate(PARAM_NAMES):
        diff = abs(m["reference_u"][i] - m["jax_u"][i]) / m["sd_u"][i]
        lines.append(f"| {name} | {m['reference'][i]:.6f} | {m['jax'][i]:.6f} | "
                     f"{diff:.1e} |")
    r = result["rwmh"]
    n = result["nuts"]
    lines += [
        "",
        f"**Posterior.** Random-walk Metropolis in plain NumPy: {RWMH_CHAINS} chains of "
        f"{RWMH_DRAWS:,} draws after {RWMH_BURN_IN:,} burn-in ({RWMH_PROCESSES} processes), "
        "Gaussian proposal "
        f"{RWMH_SCALE:.3f} times the inverse Hessian at the mode of the unconstrained "
        f"density (central differences), acceptance {r['acceptance']:.3f}, "
        f"{r['seconds']:.0f} s. NUTS (`lecture_utils.sampling.run_nuts`): {NUTS_CHAINS} "
        f"chains, {NUTS_WARMUP} warm-up steps and {NUTS_DRAWS} draws each, "
        f"{n['divergences']} divergences, {n['seconds']:.0f} s. Means and standard "
        "deviations of the natural parameters; z = difference / sqrt(MCSE_NUTS^2 + "
        "MCSE_RWMH^2) (ArviZ's MCSEs); agreement within Monte Carlo error if every |z| is "
        f"below {result['z_critical']:.2f} (two-sided, family-wise level "
        f"{Z_FAMILY_LEVEL} over {2 * D} comparisons).",
        "",
        "| parameter | mean NUTS | mean RWMH | z | sd NUTS | sd RWMH | z | ESS NUTS | "
        "ESS RWMH | R-hat RWMH |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["agreement"]:
        lines.append(
            f"| {row['parameter']} | {row['nuts_mean']:.4f} | {row['rwmh_mean']:.4f} | "
            f"{row['z_mean']:+.2f} | {row['nuts_sd']:.4f} | {row['rwmh_sd']:.4f} | "
            f"{row['z_sd']:+.2f} | {row['nuts_ess_bulk']:.0f} | {row['rwmh_ess_bulk']:.0f} | "
            f"{row['rwmh_r_hat']:.3f} |")
    worst = max(max(abs(row["z_mean"]), abs(row["z_sd"])) for row in result["agreement"])
    lines += ["", f"Largest |z|: {worst:.2f} "
              f"({'within' if worst < result['z_critical'] else 'NOT within'} Monte Carlo "
              "error)."]
    return "\n".join(lines) + "\n"


def main():
    import json
    import multiprocessing
    import platform
    import sys
    import time
    from datetime import date
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from lecture_utils.sampling import run_nuts

    results = Path(__file__).parent / "results"
    y = load_data()
    nk, jax, jnp, log_posterior_jax = jax_pipeline(y)
    if "--mode-only" in sys.argv[1:]:  # redo the mode comparison of the committed run
        result = json.loads((results / "nk_reference.json").read_text())
        rw = result["rwmh"]
        result["mode"] = compare_modes(y, np.array(rw["u_mode"]),
                                       np.array(rw["cov"]) / rw["scale"], log_posterior_jax,
                                       jnp)
        (results / "nk_reference.json").write_text(json.dumps(result, indent=1) + "\n")
        (results / "nk_reference.md").write_text(markdown(result))
        return print(markdown(result))
    np.testing.assert_array_equal(y, nk.load_data()[1])  # the same data, read twice

    worst, used = compare_pointwise(y, nk, jax, jnp, log_posterior_jax)
    sm_vs_np = 0.0
    for p in np.stack([np.asarray(v) for v in nk.sample_prior(jax.random.key(1), (10,))], 1):
        a, b = loglik(p, y), loglik(p, y, method="numpy")
        if np.isfinite(a):
            sm_vs_np = max(sm_vs_np, abs(a - b) / abs(b))
    print(f"log posterior: {used} points, max rel diff {worst:.1e}; "
          f"statsmodels vs numpy {sm_vs_np:.1e}", flush=True)

    # A start for the mode of the density of u: the mode of the natural density, with
    # bounds (it lies on the boundary of the support in kappa, rA and rho_g).
    tic = time.perf_counter()
    reference = posterior_mode(y, START)
    print(f"scipy natural mode: {reference.message} after {reference.nit} iterations, "
          f"{time.perf_counter() - tic:.0f} s", flush=True)

    # The RWMH proposal: inverse Hessian at the mode of the density of u.
    u_fit = scipy.optimize.minimize(lambda u: -log_posterior_unconstrained(u, y),
                                    to_unconstrained(reference.x), method="BFGS",
                                    options=dict(gtol=1e-6))
    H_u = hessian(lambda u: log_posterior_unconstrained(u, y), u_fit.x)
    cov = RWMH_SCALE * np.linalg.inv(-H_u)
    cov = 0.5 * (cov + cov.T)
    rng = np.random.default_rng(SEED)
    starts = u_fit.x + rng.multivariate_normal(np.zeros(D), cov / RWMH_SCALE, size=RWMH_CHAINS)
    mode = compare_modes(y, u_fit.x, cov / RWMH_SCALE, log_posterior_jax, jnp)
    tic = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(RWMH_PROCESSES) as pool:
        out = pool.starmap(rwmh_chain, [(y, starts[c], cov, c) for c in range(RWMH_CHAINS)])
    rwmh_seconds = time.perf_counter() - tic
    first_draws = out[0][0][:NUM_STORED_DRAWS]
    chains = [draws[RWMH_BURN_IN:] for draws, _ in out]
    acceptance = [acc for _, acc in out]
    print(f"RWMH: acceptance {np.round(acceptance, 3)}, {rwmh_seconds:.0f} s", flush=True)
    rwmh_natural = to_natural(np.stack(chains))

    # NUTS from the JAX mode, chains dispersed by the inverse Hessian.
    theta_mode = jnp.asarray(mode["jax_u"])
    nuts_starts = theta_mode + jnp.asarray(
        rng.multivariate_normal(np.zeros(D), cov / RWMH_SCALE, size=NUTS_CHAINS))
    tic = time.perf_counter()
    run = jax.block_until_ready(run_nuts(log_posterior_jax, jax.random.key(SEED), nuts_starts,
                                         num_warmup=NUTS_WARMUP, num_samples=NUTS_DRAWS))
    nuts_seconds = time.perf_counter() - tic
    nuts_natural = np.asarray(jax.vmap(jax.vmap(
        lambda th: jnp.stack(list(nk.constrain(th)))))(run.samples))
    print(f"NUTS: {nuts_seconds:.0f} s, divergences {int(run.divergences.sum())}", flush=True)

    table = agreement_table(summaries(nuts_natural), summaries(rwmh_natural))
    result = {
        "what": "lecture 5's posterior by an independent NumPy/scipy pipeline "
                "(benchmarks/nk_reference.py) against the JAX pipeline",
        "date": date.today().isoformat(),
        "machine": f"Machine: {platform.machine()}, {platform.processor() or 'CPU'}, "
                   f"jax {jax.__version__}, 2 cores shared with other jobs",
        "seed": SEED,
        "parameters": list(PARAM_NAMES),
        "pointwise": {"points": used, "max_rel_diff": worst,
                      "statsmodels_vs_numpy": sm_vs_np},
        "mode": mode,
        "rwmh": {"chains": RWMH_CHAINS, "draws": RWMH_DRAWS, "burn_in": RWMH_BURN_IN,
                 "scale": RWMH_SCALE, "u_mode": u_fit.x.tolist(), "cov": cov.tolist(),
                 "starts": starts.tolist(), "acceptance": float(np.mean(acceptance)),
                 "first_draws_chain0": first_draws.tolist(), "seconds": rwmh_seconds},
        "nuts": {"chains": NUTS_CHAINS, "warmup": NUTS_WARMUP, "draws": NUTS_DRAWS,
                 "divergences": int(run.divergences.sum()), "seconds": nuts_seconds},
        "z_critical": z_critical(),
        "agreement": table,
    }
    results.mkdir(exist_ok=True)
    (results / "nk_reference.json").write_text(json.dumps(result, indent=1) + "\n")
    (results / "nk_reference.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
