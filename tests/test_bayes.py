"""Tests of lecture_utils.trend_cycle (the model, the transforms) and of the book's
NUTS setup on state-space posteriors.

tests/test_sampling.py checks the sampler module on targets with a known
answer. Here it samples posteriors whose log density runs a Kalman filter, as
in lecture 4, and is checked three ways, each against something it does not
share code with:
  * on a small simulated model, its posterior means agree with those of an
    independent random-walk Metropolis sampler written in NumPy on the NumPy
    Kalman filter (z-test with Monte Carlo standard errors from ArviZ);
  * with flat priors and a long series, its posterior mean and covariance are
    close to the MLE and the inverse Hessian (Bernstein-von Mises);
  * simulation-based calibration (Talts et al. 2018): benchmarks/sbc.py runs
    it (too slow for the test command) and commits benchmarks/results/sbc.json;
    here we assert on that result and re-run its first chunk to check that the
    committed ranks still come out of this code.

These three use a small AR(1)-plus-noise model. The sampler on lecture 4's own
posterior (the trend-cycle model, its priors and coordinates, T = 202, slope
shocks near zero included) is calibrated by benchmarks/sbc_trend_cycle.py,
whose committed result tests/test_trend_cycle.py checks; the lecture itself
checks its four chains' convergence (R-hat, ESS, no divergences).
"""

import csv
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
import scipy.stats

from helpers import load_benchmark

import lecture_utils  # noqa: F401  (float64)
from lecture_utils import trend_cycle as tc
from lecture_utils.data import load_gdp
from lecture_utils.kalman import kalman_filter_numpy, kalman_loglik
from lecture_utils.optim import lbfgs_minimize
from lecture_utils.sampling import run_nuts, summary
from lecture_utils.simulation import LSSModel

ROOT = Path(__file__).resolve().parents[1]


# --- helpers: AR(1) plus noise, y[t] = x_{t+1} + s_v v, x_0 stationary ---------------

def simulate_ar1_noise(rng, rho, s_w, s_v, T):
    x = rng.normal() * s_w / np.sqrt(1 - rho**2)
    y = np.empty(T)
    for t in range(T):
        x = rho * x + s_w * rng.normal()
        y[t] = x + s_v * rng.normal()
    return y


def ar1_model(rho, s_w, s_v):
    """(model, mu0, Sigma0) as arrays of the library in use (NumPy or JAX)."""
    xp = jnp if isinstance(rho, jax.Array) else np
    model = LSSModel(xp.reshape(rho, (1, 1)), xp.reshape(s_w, (1, 1)), xp.ones((1, 1)),
                     xp.reshape(s_v, (1, 1)))
    return model, xp.zeros(1), xp.reshape(s_w**2 / (1 - rho**2), (1, 1))


def natural_np(theta):
    return np.tanh(theta[0]), np.exp(theta[1]), np.exp(theta[2])


def natural_jax(theta):
    return jnp.tanh(theta[0]), jnp.exp(theta[1]), jnp.exp(theta[2])


# Prior: rho ~ U(-1, 1); s_w, s_v ~ LogNormal(log 0.5, 0.5).
PRIOR_S = scipy.stats.lognorm(s=0.5, scale=0.5)


def log_posterior_numpy(theta, y):
    """Independent NumPy/scipy log posterior in theta = (atanh rho, log s_w, log s_v)."""
    rho, s_w, s_v = natural_np(theta)
    model, mu0, Sigma0 = ar1_model(rho, s_w, s_v)
    loglik = kalman_filter_numpy(model, mu0, Sigma0, y[:, None], jitter=0.0)[0]
    log_prior = np.log(0.5) + PRIOR_S.logpdf(s_w) + PRIOR_S.logpdf(s_v)
    log_jac = np.log(1 - rho**2) + theta[1] + theta[2]
    return loglik + log_prior + log_jac


def random_walk_metropolis(logpdf, start, cov, n, rng):
    chol = np.linalg.cholesky(cov)
    x, lp = np.array(start, dtype=float), logpdf(start)
    out = np.empty((n, x.size))
    for i in range(n):
        prop = x + chol @ rng.normal(size=x.size)
        lp_prop = logpdf(prop)
        if np.log(rng.uniform()) < lp_prop - lp:
            x, lp = prop, lp_prop
        out[i] = x
    return out


def natural_draws(theta_draws):
    """(chains, draws, 3) theta -> dict of natural-parameter arrays (chains, draws)."""
    t = np.asarray(theta_draws)
    return {"rho": np.tanh(t[..., 0]), "sigma_w": np.exp(t[..., 1]),
            "sigma_v": np.exp(t[..., 2])}


# --- the model and its transforms ---------------------------------------------------

def test_transforms_round_trip_and_stay_stationary(rng):
    theta = jnp.asarray(rng.normal(scale=2.0, size=(200, 5)))
    for th in theta:
        p = tc.constrain(th)
        np.testing.assert_allclose(tc.unconstrain(p), th, rtol=1e-9, atol=1e-9)
        # Stationary: the roots of 1 - phi1 z - phi2 z^2 lie outside the unit circle.
        roots = np.roots([-float(p.phi2), -float(p.phi1), 1.0])
        assert np.all(np.abs(roots) > 1)


def test_polar_coordinates_of_the_level_and_cycle_shocks():
    # theta[0] is the log of the total sd, theta[2] the logit of the angle / (pi/2),
    # accurate far into either tail (a naive cos(alpha) would round to 0 at u = 30).
    for u in (-30.0, -3.0, 0.0, 3.0, 30.0):
        th = jnp.array([np.log(0.8), -3.0, u, 2.0, -0.7])
        p = tc.constrain(th)
        np.testing.assert_allclose(np.hypot(p.sigma_level, p.sigma_cycle), 0.8, rtol=1e-14)
        alpha, alpha_to_right_angle = 0.5 * np.pi / (1 + np.exp(-u)), 0.5 * np.pi / (1 + np.exp(u))
        np.testing.assert_allclose([p.sigma_level, p.sigma_cycle],
                                   [0.8 * np.sin(alpha_to_right_angle), 0.8 * np.sin(alpha)],
                                   rtol=1e-12)
        np.testing.assert_allclose(tc.unconstrain(p), th, rtol=1e-12, atol=1e-12)


def test_log_jacobian_matches_autodiff_determinant(rng):
    for th in jnp.asarray(rng.normal(size=(5, 5))):
        J = jax.jacfwd(lambda t: jnp.stack(tc.constrain(t)))(th)
        np.testing.assert_allclose(tc.log_abs_det_jacobian(th),
                                   np.linalg.slogdet(np.asarray(J))[1], rtol=1e-10)


def test_prior_density_matches_scipy_and_prior_draws():
    p = tc.TrendCycleParams(*map(jnp.asarray, (0.7, 0.05, 0.3, 1.2, -0.5)))
    expected = sum(scipy.stats.halfnorm(scale=s).logpdf(float(v))
                   for s, v in zip(tc.PRIOR_SCALES, p[:3])) - np.log(4 * (1 - -0.5))
    np.testing.assert_allclose(tc.log_prior(p), expected, rtol=1e-12)
    assert tc.log_prior(p._replace(phi1=jnp.asarray(1.6))) == -np.inf  # r1 > 1
    draws = tc.sample_prior(jax.random.key(3), (50_000,))
    assert scipy.stats.kstest(np.asarray(draws.phi2), scipy.stats.uniform(-1, 2).cdf).pvalue > 1e-3
    assert scipy.stats.kstest(np.asarray(draws.sigma_slope),
                              scipy.stats.halfnorm(scale=0.1).cdf).pvalue > 1e-3
    assert np.all(np.isfinite(jax.vmap(tc.log_prior)(draws)))


def test_stationary_covariance_solves_lyapunov():
    import scipy.linalg

    A = np.array([[1.3, -0.5], [1.0, 0.0]])
    expected = scipy.linalg.solve_discrete_lyapunov(A, np.diag([0.7**2, 0.0]))
    np.testing.assert_allclose(tc.ar2_stationary_cov(1.3, -0.5, 0.7), expected, rtol=1e-12)


def test_loglik_matches_numpy_filter():
    dates, gdp = load_gdp()
    assert gdp.shape == (203,) and dates[0] == 1959.0 and dates[-1] == 2009.5
    p = tc.TrendCycleParams(*map(jnp.asarray, (0.6, 0.03, 0.4, 1.5, -0.6)))
    mu0, Sigma0 = tc.initial_moments(p, gdp[0])
    model = tc.trend_cycle_model(p)
    expected = kalman_filter_numpy(model, np.asarray(mu0), np.asarray(Sigma0),
                                   gdp[1:, None], jitter=0.0)[0]
    np.testing.assert_allclose(tc.loglik(p, gdp[0], jnp.asarray(gdp[1:])), expected, rtol=1e-10)


def test_nber_recession_dates_are_quarters_in_order():
    flat = np.array(tc.NBER_RECESSIONS).ravel()
    assert np.all(np.diff(flat) > 0) and flat[0] >= 1960 and flat[-1] < 2010
    np.testing.assert_array_equal(flat * 4, np.round(flat * 4))


# --- the sampler against independent answers --------------------------------------

def test_nuts_agrees_with_numpy_random_walk_metropolis():
    """Posterior means from NUTS (JAX) and RWM (NumPy filter) agree within MC error.

    z = (mean_NUTS - mean_RWM) / sqrt(mcse_NUTS^2 + mcse_RWM^2) for each of the
    three parameters; family-wise level 0.001 (Bonferroni: |z| < 3.59).
    """
    rng = np.random.default_rng(11)
    y = simulate_ar1_noise(rng, 0.7, 0.6, 0.4, T=40)

    def log_posterior_jax(theta):
        rho, s_w, s_v = natural_jax(theta)
        model, mu0, Sigma0 = ar1_model(rho, s_w, s_v)
        log_prior = (jnp.log(0.5) + jax.scipy.stats.norm.logpdf(jnp.log(s_w), jnp.log(0.5), 0.5)
                     + jax.scipy.stats.norm.logpdf(jnp.log(s_v), jnp.log(0.5), 0.5))
        # lognormal density = normal density of log s, times 1/s; the Jacobian of
        # s = exp(theta) multiplies by s again, so only the atanh Jacobian remains.
        return (kalman_loglik(model, mu0, Sigma0, jnp.asarray(y)[:, None], jitter=0.0)
                + log_prior + jnp.log1p(-rho**2))

    start = np.array([np.arctanh(0.5), np.log(0.5), np.log(0.5)])
    theta_check = start + 0.1
    np.testing.assert_allclose(log_posterior_jax(jnp.asarray(theta_check)),
                               log_posterior_numpy(theta_check, y), rtol=1e-10)

    nuts = run_nuts(log_posterior_jax, jax.random.key(5), jnp.tile(start, (4, 1)),
                       num_warmup=400, num_samples=1000)
    assert int(nuts.divergences.sum()) == 0

    mode = scipy.optimize.minimize(lambda t: -log_posterior_numpy(t, y), start, method="BFGS")
    chains = [random_walk_metropolis(lambda t: log_posterior_numpy(t, y), mode.x,
                                     2.38**2 / 3 * mode.hess_inv, 3000, rng)[500:]
              for _ in range(2)]
    rwm = natural_draws(np.stack(chains))
    hmc = natural_draws(nuts.samples)
    z_crit = scipy.stats.norm.ppf(1 - 0.001 / 6)
    rwm_summary, hmc_summary = summary(rwm), summary(hmc)  # ArviZ: R-hat, MCSE of the mean
    for name in rwm:
        assert rwm_summary["r_hat"][name] < 1.05, name  # MCSE is meaningful
        mcse = np.hypot(hmc_summary["mcse_mean"][name], rwm_summary["mcse_mean"][name])
        z = (hmc[name].mean() - rwm[name].mean()) / mcse
        assert abs(z) < z_crit, (name, z, hmc[name].mean(), rwm[name].mean(), mcse)
        # and the MC error is small enough for the test to mean something
        assert mcse < 0.1 * hmc[name].std(), (name, mcse)


def test_flat_prior_posterior_approaches_mle_and_inverse_hessian():
    """T = 500, flat priors on (rho, s_w), s_v known: the posterior mean lies within
    0.15 posterior sd of the MLE, the posterior sd within 10% of the
    inverse-Hessian s.e., the correlation within 0.1.

    (Bernstein-von Mises: differences of order T^{-1/2} in sd units, plus Monte
    Carlo error of about 0.03 sd in the mean and 2-3% in the sd.)
    """
    rng = np.random.default_rng(12)
    s_v = 0.3
    y = jnp.asarray(simulate_ar1_noise(rng, 0.7, 0.6, s_v, T=500))

    def loglik(phi):
        model, mu0, Sigma0 = ar1_model(phi[0], phi[1], jnp.asarray(s_v))
        return kalman_loglik(model, mu0, Sigma0, y[:, None], jitter=0.0)

    def natural2(theta):
        return jnp.stack([jnp.tanh(theta[0]), jnp.exp(theta[1])])

    def log_density(theta):  # flat in (rho, s_w): only the Jacobian remains
        return loglik(natural2(theta)) + jnp.log1p(-jnp.tanh(theta[0]) ** 2) + theta[1]

    start = jnp.array([0.5, jnp.log(0.5)])
    mle = lbfgs_minimize(lambda th: -loglik(natural2(th)) / y.shape[0], start, tol=1e-9)
    phi_hat = natural2(mle.params)
    cov = np.linalg.inv(jax.hessian(lambda phi: -loglik(phi))(phi_hat))

    nuts = run_nuts(log_density, jax.random.key(6), jnp.tile(mle.params, (4, 1)),
                       num_warmup=300, num_samples=600)
    draws = np.asarray(jax.vmap(jax.vmap(natural2))(nuts.samples)).reshape(-1, 2)
    sd_hat = np.sqrt(np.diag(cov))
    assert np.all(np.abs(draws.mean(axis=0) - phi_hat) < 0.15 * sd_hat), (
        (draws.mean(axis=0) - phi_hat) / sd_hat)
    np.testing.assert_allclose(draws.std(axis=0), sd_hat, rtol=0.1)
    np.testing.assert_allclose(np.corrcoef(draws.T)[0, 1], cov[0, 1] / sd_hat.prod(), atol=0.1)


def test_simulation_based_calibration_committed_result():
    """Ranks are uniform (chi-square per parameter, family-wise level 0.01), the
    no-Jacobian control is rejected (p < 0.001 for some parameter), and chunk 0
    reproduces."""
    result = json.loads((ROOT / "benchmarks" / "results" / "sbc.json").read_text())
    sbc = load_benchmark("sbc")
    ranks = np.array(result["correct"]["ranks"])
    assert ranks.shape == (result["replications"], 3) and result["replications"] >= 500
    np.testing.assert_allclose(sbc.rank_uniformity_pvalues(ranks, sbc.NUM_RANK_DRAWS, sbc.NUM_BINS),
                               list(result["correct"]["chi2_pvalues"].values()))
    assert min(result["correct"]["chi2_pvalues"].values()) > 0.01 / 3
    assert min(result["no_jacobian_control"]["chi2_pvalues"].values()) < 0.001
    # The committed ranks come from this code: re-run the first chunk. NUTS
    # trajectories are chaotic, and a re-run inside this test process has been
    # seen to differ from the script's in the last bits and then in a few later
    # replications' ranks; an unrelated sampler or model would match about 1%
    # of the ranks (uniform on 0..99), so two thirds identical ties them to the code.
    chunk_ranks, _ = sbc.run_chunk(0)
    np.testing.assert_array_equal(chunk_ranks[0], ranks[0])
    assert np.mean(chunk_ranks == ranks[:sbc.CHUNK]) >= 2 / 3


def test_coordinates_benchmark_committed_result():
    """What lecture 4 says of benchmarks/results/coordinates.csv: in the logs of
    the three standard deviations the chains diverge in every configuration and
    each gradient buys less than half the ESS it buys in the lecture's
    coordinates, which have a few divergences at target 0.8 and none at 0.95."""
    with open(ROOT / "benchmarks" / "results" / "coordinates.csv") as f:
        rows = list(csv.DictReader(f))
    runs = {(r["coordinates"].split(":")[0], float(r["target"]), int(r["seed"])): r for r in rows}
    configs = {(target, seed) for _, target, seed in runs}
    assert len(runs) == 2 * len(configs) and (0.95, 1) in configs
    for target, seed in configs:
        ours, logs = runs["ours", target, seed], runs["logs", target, seed]
        assert int(logs["divergences"]) > int(ours["divergences"]), (target, seed)
        assert float(ours["ess_per_1000_grads"]) > 2 * float(logs["ess_per_1000_grads"])
        if target == 0.95:
            assert int(ours["divergences"]) == 0 and float(ours["max_rhat"]) <= 1.01
    # ... and at the default target 0.8 even ours saw a few divergences.
    assert 0 < sum(int(r["divergences"]) for (name, target, _), r in runs.items()
                   if name == "ours" and target == 0.8) < 20
