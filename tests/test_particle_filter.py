"""The particle filters against independent answers: a NumPy resampler, the exact
Kalman likelihood and score on a linear-Gaussian model (unbiasedness, 1/P
variance), the Kalman filter itself for the Rao-Blackwellised filter, and
finite differences. Small T, many seeds under vmap."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lecture_utils.kalman import kalman_loglik, kalman_smoother
from lecture_utils.particle_filter import (
    FilterNoise,
    backward_sample,
    bootstrap_filter,
    draw_noise,
    effective_sample_size,
    hilbert_order,
    rb_filter,
    score_estimates,
    systematic_resample,
)
from lecture_utils.simulation import LSSModel, lss_observation, lss_transition

T = 10
MU0, SIGMA0 = jnp.zeros(2), jnp.eye(2)


def lg_model(theta=(0.8, np.log(0.5))):
    """A two-state linear-Gaussian model; theta = (A[0, 0], log of C's diagonal)."""
    A = jnp.array([[0.0, 0.1], [0.0, 0.5]]).at[0, 0].set(theta[0])
    return LSSModel(A, jnp.exp(theta[1]) * jnp.eye(2), jnp.array([[1.0, 1.0]]),
                    jnp.array([[0.5]]))


@pytest.fixture(scope="module")
def y_lg():
    rng = np.random.default_rng(7)
    A, C, G, H = (np.asarray(m) for m in lg_model())
    x, y = rng.normal(size=2), np.empty((T, 1))
    for t in range(T):
        x = A @ x + C @ rng.normal(size=2)
        y[t] = G @ x + H @ rng.normal(size=1)
    return jnp.asarray(y)


def lg_loglik(theta, noise, y, gradient="fisher", ess_threshold=0.5, order=None):
    """Bootstrap estimate for the linear-Gaussian model from noise = (z0 (P, 2), FilterNoise)."""
    z0, filter_noise = noise
    model = lg_model(theta)
    x0 = MU0 + z0 @ jnp.linalg.cholesky(SIGMA0).T
    return bootstrap_filter(lss_transition, lss_observation, model.H, model, y, x0,
                            filter_noise, gradient=gradient, ess_threshold=ess_threshold,
                            order=order).loglik


def np_noise(seed, P, S=None):
    """Noise for S seeds (or one, S=None) from NumPy: no PRNG program to compile."""
    rng = np.random.default_rng(seed)
    lead = () if S is None else (S,)
    return (jnp.asarray(rng.normal(size=lead + (P, 2))),
            FilterNoise(jnp.asarray(rng.normal(size=lead + (T, P, 2))),
                        jnp.asarray(rng.normal(size=lead + (T,)))))


def flat_noise(P, K):
    return FilterNoise(jnp.zeros((T, P, K)), jnp.zeros(T))


THETA = jnp.array([0.8, np.log(0.5)])


# ----- resampling ----------------------------------------------------------------------


def numpy_systematic(W, u):
    """Plain-loop systematic resampling: walk the cumulative weights once."""
    P = len(W)
    out, j, c = np.empty(P, dtype=int), 0, W[0]
    for i in range(P):
        while c <= (u + i) / P and j < P - 1:
            j += 1
            c += W[j]
        out[i] = j
    return out


def test_systematic_resampling_matches_numpy_loop(rng):
    for P in (1, 5, 64, 1000):
        for _ in range(5):
            W = rng.dirichlet(np.full(P, 0.3))
            u = rng.uniform()
            ours = np.asarray(systematic_resample(jnp.log(W), u))
            np.testing.assert_array_equal(ours, numpy_systematic(W, u))
            counts = np.bincount(ours, minlength=P)  # floor or ceil of P W
            assert np.all(np.abs(counts - P * W) < 1 + 1e-9)


def test_hilbert_order_is_a_curve_through_neighbouring_cells():
    """On a 16 x 16 grid the index is a bijection onto 0..255, and consecutive indices are
    cells that share a side (the defining property of the Hilbert curve)."""
    n = 16
    key = jax.vmap(hilbert_order([0.0, 0.0], [1.0, 1.0], bits=4))
    ij = np.array([(i, j) for i in range(n) for j in range(n)])
    d = np.asarray(key(jnp.asarray((ij + 0.5) / n)))
    assert sorted(d.tolist()) == list(range(n * n))
    path = ij[np.argsort(d)]
    assert np.all(np.abs(np.diff(path, axis=0)).sum(axis=1) == 1)


def test_effective_sample_size(rng):
    w = rng.uniform(size=20)
    assert np.isclose(effective_sample_size(jnp.log(w)), w.sum() ** 2 / (w**2).sum(), rtol=1e-12)


# ----- the likelihood estimate on a linear-Gaussian model ------------------------------


def test_likelihood_estimate_is_unbiased(y_lg):
    """E[L_hat / L] = 1 within Monte Carlo error, for adaptive, always and sorted resampling;
    the log's mean is below log L (Jensen), which the same test would detect."""
    exact = kalman_loglik(lg_model(), MU0, SIGMA0, y_lg)
    S, P = 4000, 50
    noise = np_noise(0, P, S)
    adaptive_or_always = jax.jit(jax.vmap(
        lambda u, kappa: lg_loglik(THETA, u, y_lg, ess_threshold=kappa), (0, None)))
    sorted_ = jax.jit(jax.vmap(lambda u: lg_loglik(THETA, u, y_lg, order=lambda x: x[0])))
    for kw, ll in (({"ess_threshold": 0.5}, adaptive_or_always(noise, 0.5)),
                   ({"ess_threshold": 1.0}, adaptive_or_always(noise, 1.0)),
                   ({"order": "x[0]"}, sorted_(noise))):
        ratio = np.exp(np.asarray(ll) - float(exact))
        se = ratio.std() / np.sqrt(S)
        assert abs(ratio.mean() - 1) < 4 * se, (kw, ratio.mean(), se)
        assert se < 0.02  # the check has power
        log_se = np.std(ll) / np.sqrt(S)
        assert np.mean(ll) < float(exact) - 4 * log_se  # the log is biased downwards


def test_loglik_variance_falls_like_one_over_P(y_lg):
    Ps, S = (50, 200, 800), 500
    variances = []
    for P in Ps:
        ll = jax.jit(jax.vmap(lambda u: lg_loglik(THETA, u, y_lg)))(np_noise(P, P, S))
        variances.append(np.var(np.asarray(ll)))
    slope = np.polyfit(np.log(Ps), np.log(variances), 1)[0]
    assert -1.25 < slope < -0.75, (slope, variances)


# ----- the Rao-Blackwellised filter ------------------------------------------------------


def test_rb_filter_with_fixed_particles_is_the_kalman_filter(y_lg):
    """Particles that never move: every particle's Kalman filter is the exact one."""
    model = lg_model()
    P = 3
    res = rb_filter(lambda z, w, p, t: z, lambda z, p, t: p, model, y_lg, jnp.zeros((P, 1)),
                    MU0, SIGMA0, flat_noise(P, 1), ess_threshold=1.0)
    exact = kalman_loglik(model, MU0, SIGMA0, y_lg)
    np.testing.assert_allclose(res.loglik, exact, rtol=1e-12)
    assert res.mu.shape == (T, P, 2) and res.Sigma.shape == (T, P, 2, 2)
    np.testing.assert_allclose(res.ess, P, rtol=1e-12)


# ----- smoothing -------------------------------------------------------------------------------


def test_backward_simulation_matches_the_kalman_smoother(y_lg):
    """20 filter runs (P = 300) with 100 backward paths each: the paths' means and variances
    agree with the Kalman smoother's, the mean within 4 standard errors between runs."""
    model, R, P = lg_model(), 20, 300

    def logpdf(x_next, x, p, t):
        return jax.scipy.stats.multivariate_normal.logpdf(x_next, p.A @ x, p.C @ p.C.T)

    def paths(noise, key):
        x0 = MU0 + noise[0] @ jnp.linalg.cholesky(SIGMA0).T
        res = bootstrap_filter(lss_transition, lss_observation, model.H, model, y_lg, x0,
                               noise[1])
        return backward_sample(key, res, logpdf, model, num_samples=100)

    draws = jax.jit(jax.vmap(paths))(np_noise(5, P, R), jax.random.split(jax.random.key(5), R))
    exact = kalman_smoother(model, MU0, SIGMA0, y_lg)
    run_means = np.asarray(draws.mean(axis=1))  # (R, T, N)
    se = run_means.std(axis=0) / np.sqrt(R)
    z = (run_means.mean(axis=0) - exact.mu[1:]) / se
    assert np.all(np.abs(z) < 4), z
    variances = np.asarray(draws.reshape(-1, T, 2).var(axis=0))
    exact_var = np.asarray(jnp.diagonal(exact.Sigma[1:], axis1=1, axis2=2))
    np.testing.assert_allclose(variances, exact_var, rtol=0.15)


# ----- gradients ----------------------------------------------------------------------------


def test_no_resampling_gradient_matches_finite_differences(y_lg):
    """Without resampling the estimate is smooth in theta: autodiff (naive = fisher) equals
    central differences on the same noise."""
    ll = partial(lg_loglik, y=y_lg, ess_threshold=0.0)
    s = score_estimates(lambda th, u, gradient: ll(th, u, gradient=gradient), THETA,
                        np_noise(3, 30), step=1e-5)
    np.testing.assert_allclose(s.naive, s.fisher, rtol=1e-12)
    np.testing.assert_allclose(s.naive, s.finite_difference, rtol=1e-6)


def test_fisher_score_unbiased_naive_biased(y_lg):
    """Mean over seeds: the Fisher-identity score matches the exact Kalman score within MC
    error; the naive gradient (resampling weights treated as constants) misses it. The Fisher
    score's bias is O(1/P) (measured: about 1.4, 0.5, 0.07 in the first coordinate at
    P = 50, 200, 800, against an MC error of 0.06), so the check runs at P = 800."""
    exact = jax.grad(lambda th: kalman_loglik(lg_model(th), MU0, SIGMA0, y_lg))(THETA)
    S, P = 500, 800
    ll = partial(lg_loglik, y=y_lg, ess_threshold=1.0)
    scores = partial(score_estimates, lambda th, u, gradient: ll(th, u, gradient=gradient),
                     THETA, step=1e-3)
    s = jax.jit(jax.vmap(scores))(np_noise(11, P, S))
    z = {name: (np.mean(v, 0) - exact) / (np.std(v, 0) / np.sqrt(S))
         for name, v in s._asdict().items()}
    assert np.all(np.abs(z["fisher"]) < 4), z
    assert np.all(np.abs(z["finite_difference"]) < 4), z
    assert np.max(np.abs(z["naive"])) > 8, z


# ----- failure semantics, batching, validation -------------------------------------------


def test_impossible_observation_gives_minus_inf_and_finite_gradient(y_lg):
    noise, theta = np_noise(1, 20), THETA
    y_bad = y_lg.at[4, 0].set(1e200)  # every particle: density 0
    value, grad = jax.value_and_grad(lg_loglik)(theta, noise, y_bad)
    assert value == -np.inf and np.all(np.isfinite(grad))

    def zero_noise(th):  # H = 0: a singular observation density
        model = lg_model(th)._replace(H=jnp.zeros((1, 1)))
        return bootstrap_filter(lss_transition, lss_observation, model.H, model, y_lg,
                                noise[0], noise[1]).loglik
    value, grad = jax.value_and_grad(zero_noise)(theta)
    assert value == -np.inf and np.all(np.isfinite(grad))
    # under vmap a failing member leaves the others alone
    batch = jax.vmap(lambda y: lg_loglik(theta, noise, y))(jnp.stack([y_lg, y_bad]))
    assert batch[1] == -np.inf
    np.testing.assert_allclose(batch[0], lg_loglik(theta, noise, y_lg), rtol=1e-12)


def test_vmap_over_parameters_and_history_flag(y_lg):
    P = 40
    noise = np_noise(2, P)
    thetas = jnp.array([[0.7, -0.5], [0.8, -0.7], [0.9, -0.9]])
    batch = jax.vmap(lambda th: lg_loglik(th, noise, y_lg))(thetas)
    one = [lg_loglik(th, noise, y_lg) for th in thetas]
    np.testing.assert_allclose(batch, one, rtol=1e-12)
    model = lg_model(thetas[0])
    run = partial(bootstrap_filter, lss_transition, lss_observation, model.H, model, y_lg,
                  noise[0], noise[1])
    full, last = run(), run(history=False)
    assert full.particles.shape == (T, P, 2) and last.particles.shape == (P, 2)
    np.testing.assert_array_equal(full.particles[-1], last.particles)
    np.testing.assert_array_equal(full.log_weights[-1], last.log_weights)
    np.testing.assert_array_equal(full.ancestors[-1], last.ancestors)
    np.testing.assert_allclose(full.loglik, last.loglik, rtol=1e-14)
    np.testing.assert_allclose(jnp.exp(full.log_weights).sum(1), 1, rtol=1e-12)
    assert np.all((full.ess >= 1 - 1e-9) & (full.ess <= P + 1e-9))
    # the ancestors are the identity exactly where the filter did not resample
    identity = np.all(np.asarray(full.ancestors) == np.arange(P), axis=1)
    assert np.all(identity[~np.asarray(full.resampled)]) and not full.resampled[0]
    # a missing observation (NaN) adds nothing and leaves the weights alone
    gap = run.func(*run.args[:4], y_lg.at[3].set(np.nan), *run.args[5:])
    assert gap.loglik_increments[3] == 0
    np.testing.assert_allclose(gap.log_weights[3], -np.log(P) if gap.resampled[3]
                               else gap.log_weights[2], rtol=1e-13)


def test_errors_name_the_argument(y_lg):
    P = 5
    x0, noise = jnp.zeros((P, 2)), flat_noise(P, 2)
    model = lg_model()
    run = partial(bootstrap_filter, lss_transition, lss_observation)
    cases = [
        (dict(H=model.H, y=y_lg[:, 0]), "y must have shape"),
        (dict(H=model.H, x0=jnp.zeros(P)), "x0 must have shape"),
        (dict(H=model.H, noise=flat_noise(P + 1, 2)), "noise.normals"),
        (dict(H=model.H, noise=FilterNoise(noise.normals, jnp.zeros(T + 1))), "noise.resampling"),
        (dict(H=model.H, noise=jax.random.key(0)), "noise must be a FilterNoise"),
        (dict(H=jnp.zeros((2, 1))), "H must have shape"),
        (dict(H=model.H, ess_threshold=1.5), "ess_threshold"),
        (dict(H=model.H, gradient="exact"), "gradient"),
    ]
    for kw, match in cases:
        args = dict(H=model.H, params=model, y=y_lg, x0=x0, noise=noise) | kw
        extra = {k: args.pop(k) for k in ("ess_threshold", "gradient") if k in args}
        with pytest.raises(ValueError, match=match):
            run(args["H"], args["params"], args["y"], args["x0"], args["noise"], **extra)
    with pytest.raises(ValueError, match="f must return"):
        bootstrap_filter(lambda x, w, p, t: x[:1], lss_observation, model.H, model, y_lg, x0,
                         noise)
    with pytest.raises(ValueError, match="num_particles"):
        draw_noise(jax.random.key(0), T, 0, 2)
    with pytest.raises(ValueError, match="Sigma0"):
        rb_filter(lambda z, w, p, t: z, lambda z, p, t: p, model, y_lg, jnp.zeros((P, 1)),
                  MU0, jnp.eye(3), flat_noise(P, 1))
