"""kalman_sample against the dense Gaussian conditional of all states given all observed data.

Error model. With S independent draws of X = (x_0..x_T) (D = (T + 1) N
numbers) from N(m, P), each entry of the sample mean has standard error
sqrt(P_ii / S), and each entry of the sample covariance about the true mean,
C_ij = mean_s (X_si - m_i)(X_sj - m_j), has standard error
sqrt((P_ij^2 + P_ii P_jj) / S) (Isserlis). :func:`standardised_errors` divides
each difference by its standard error; every entry of the covariance counts,
so the cross-time covariances such as Cov(x_t, x_{t+1} | y) are checked as
well as the marginals. A correct sampler keeps all of them below
:data:`Z_MAX` except with probability below 1e-3 (a union bound over the at
most 1,378 entries, |z| > 5 having probability 5.7e-7 each); the check
rejects samplers with the right marginals but the wrong joint, a covariance
10% too large, or a mean off by a tenth of a standard deviation
(``test_the_check_rejects_wrong_samplers``).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_lss, simulate_data, stack_models, with_missing

from lecture_utils import trend_cycle as tc
from lecture_utils.gradcheck import central_difference, random_like, tree_dot
from lecture_utils.kalman import kalman_sample
from lecture_utils.kalman.reference import _condition, _observed, dense_smoother, joint_gaussian
from lecture_utils.lss import LSSModel

S = 20_000  # draws per moment check
Z_MAX = 5.0  # largest standardised error a correct sampler is allowed (see the module docstring)


def dense_conditional(model, mu0, Sigma0, y):
    """Mean ((T+1) N,) and covariance ((T+1) N, (T+1) N) of all states given the observed y."""
    y = np.asarray(y, float)
    mean_X, mean_Y, cov_XX, cov_YX, cov_YY = joint_gaussian(model, mu0, Sigma0, y.shape[0])
    o = _observed(y)
    return _condition(mean_X, cov_XX, mean_Y, cov_YX, cov_YY, y.ravel()[o], o)


def standardised_errors(draws, mean, cov):
    """Largest |z| of the sample mean and of the sample covariance (all entries) of
    ``draws`` (S, D) against N(mean, cov); components with zero variance are held to
    a tolerance of 1e-9 of the largest standard deviation."""
    n = draws.shape[0]
    var = np.diag(cov)
    floor = 1e-9 * var.max()
    z_mean = (draws.mean(axis=0) - mean) / np.sqrt(np.maximum(var, floor) / n)
    dev = draws - mean
    C = dev.T @ dev / n
    se = np.sqrt((cov**2 + np.outer(var, var)) / n)
    z_cov = (C - cov) / np.maximum(se, floor)
    return np.abs(z_mean).max(), np.abs(z_cov).max()


# ----- problems ---------------------------------------------------------------------------


def trend_cycle_problem(T=12, seed=3):
    """The lecture's model: local linear trend plus AR(2) cycle, N=4, K=3, M=1, H=0."""
    p = tc.TrendCycleParams(*(jnp.asarray(v) for v in (0.6, 0.08, 0.7, 1.3, -0.45)))
    model = LSSModel(*(np.asarray(m) for m in tc.trend_cycle_model(p)))
    rng = np.random.default_rng(seed)
    mu0, Sigma0 = (np.asarray(a) for a in tc.initial_moments(p, 800.0))
    y = simulate_data(rng, model, T, mu0, Sigma0)
    y[[4, 5]] = np.nan
    return model, mu0, Sigma0, y


def problem(kind):
    if kind == "trend_cycle":
        return trend_cycle_problem()
    # Both with one state shock for three states (rank-one CC'), and the same shapes, so
    # that one compiled program serves both.
    rng = np.random.default_rng(["missing", "singular_prior"].index(kind))
    model = random_lss(rng, N=3, K=1, M=2, L=2)
    if kind == "missing":  # single missing entries and a whole missing row
        X = rng.normal(size=(3, 3))
        mu0, Sigma0 = rng.normal(size=3), X @ X.T / 3 + 0.2 * np.eye(3)
        y = with_missing(rng, simulate_data(rng, model, 10, mu0, Sigma0), 0.2, nan_rows=[4],
                         nan_col_rows=[7])
    else:  # a rank-one Sigma0 (two of its eigenvalues are rounding errors)
        u = rng.normal(size=3)
        mu0, Sigma0 = rng.normal(size=3), np.outer(u, u)
        y = simulate_data(rng, model, 10, mu0, Sigma0)
    return model, mu0, Sigma0, y


KINDS = ["missing", "singular_prior", "trend_cycle"]


@pytest.fixture(scope="module")
def draws_and_reference():
    """For each problem: S draws (S, T+1, N) and the dense conditional, computed once."""
    out = {}
    for i, kind in enumerate(KINDS):
        model, mu0, Sigma0, y = problem(kind)
        # The default jitter (1e-8, relative) moves the distribution by far less than the
        # Monte Carlo error; the trend-cycle check of exact observations needs jitter = 0.
        jitter = 0.0 if kind == "trend_cycle" else 1e-8
        draws = kalman_sample(jax.random.key(100 + i), model, mu0, Sigma0, y, num_samples=S,
                              jitter=jitter)
        out[kind] = (np.asarray(draws), dense_conditional(model, mu0, Sigma0, y), y)
    return out


# ----- the distribution -------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_draws_have_the_mean_and_covariance_of_the_dense_conditional(kind, draws_and_reference):
    draws, (mean, cov), y = draws_and_reference[kind]
    T, N = y.shape[0], draws.shape[2]
    assert draws.shape == (S, T + 1, N)
    z_mean, z_cov = standardised_errors(draws.reshape(S, -1), mean, cov)
    assert z_mean < Z_MAX and z_cov < Z_MAX, (z_mean, z_cov)


def test_trend_cycle_draws_reproduce_each_observation_exactly(draws_and_reference):
    """H = 0: every draw satisfies y_t = tau_{t+1} + c_{t+1} where y_t is observed, and
    not where it is missing."""
    draws, _, y = draws_and_reference["trend_cycle"]
    fitted = draws[:, 1:, 0] + draws[:, 1:, 2]  # G x_{t+1}, (S, T)
    seen = ~np.isnan(y[:, 0])
    np.testing.assert_allclose(fitted[:, seen], np.broadcast_to(y[seen, 0], (S, seen.sum())),
                               rtol=0, atol=1e-9 * np.abs(y[seen]).max())
    assert fitted[:, ~seen].std(axis=0).min() > 0.1


def test_singular_prior_draws_stay_in_its_range(draws_and_reference):
    """Sigma0 = u u': every draw of x_0 - mu0 is a multiple of u."""
    draws, _, _ = draws_and_reference["singular_prior"]
    _, mu0, Sigma0, _ = problem("singular_prior")
    u = np.linalg.eigh(Sigma0)[1][:, -1]
    d = draws[:, 0] - mu0
    np.testing.assert_allclose(d - np.outer(d @ u, u), 0.0, atol=1e-12 * np.abs(d).max())


@pytest.mark.parametrize("wrong", ["exact", "independent_over_time", "covariance_10pct_large",
                                   "mean_off_by_0.1sd"])
def test_the_check_rejects_wrong_samplers(wrong, draws_and_reference):
    """The check of the moment test, applied to NumPy samplers built from the dense
    answer: an exact one passes; a wrong one fails."""
    _, (mean, cov), _ = draws_and_reference["missing"]
    N, D = 3, mean.size
    rng = np.random.default_rng(7)
    if wrong == "independent_over_time":  # the smoothed marginals N(mu_t, Sigma_t), each t alone
        mu, Sigma = dense_smoother(*problem("missing"))
        draws = np.concatenate([rng.multivariate_normal(mu[t], Sigma[t], size=S)
                                for t in range(D // N)], axis=1)
        np.testing.assert_allclose(mu.ravel(), mean, atol=1e-9)  # the marginals are right
    else:
        factor = {"covariance_10pct_large": np.sqrt(1.1)}.get(wrong, 1.0)
        shift = 0.1 * np.sqrt(np.diag(cov)) if wrong == "mean_off_by_0.1sd" else 0.0
        draws = rng.multivariate_normal(mean + shift, factor**2 * cov, size=S)
    z_mean, z_cov = standardised_errors(draws, mean, cov)
    if wrong == "exact":
        assert z_mean < Z_MAX and z_cov < Z_MAX, (z_mean, z_cov)
    else:
        assert max(z_mean, z_cov) > 2 * Z_MAX, (z_mean, z_cov)


# ----- shapes, keys, jit, vmap ------------------------------------------------------------


NS = 1  # draws per call below (the default): one compiled program serves them all


@pytest.fixture(scope="module")
def small():
    model, mu0, Sigma0, y = problem("missing")
    return model, mu0, Sigma0, y[:5]


def test_shapes_default_and_no_data(small):
    model, mu0, Sigma0, y = small
    key = jax.random.key(0)
    assert kalman_sample(key, model, mu0, Sigma0, y).shape == (1, 6, 3)
    # T = 0: x_0 from its prior
    x0 = kalman_sample(key, model, mu0, Sigma0, y[:0], num_samples=S)
    assert x0.shape == (S, 1, 3)
    z_mean, z_cov = standardised_errors(np.asarray(x0[:, 0]), mu0, Sigma0)
    assert z_mean < Z_MAX and z_cov < Z_MAX


def test_a_key_fixes_the_draws_and_other_keys_change_them(small):
    key = jax.random.key(1)
    a = kalman_sample(key, *small)
    np.testing.assert_array_equal(a, kalman_sample(key, *small))
    b = kalman_sample(jax.random.key(2), *small)
    assert np.all(np.asarray(a) != np.asarray(b))  # every entry moves
    # A legacy key gives the draws of the typed key with the same bits.
    legacy = jax.random.PRNGKey(1)
    np.testing.assert_array_equal(kalman_sample(legacy, *small),
                                  kalman_sample(jax.random.wrap_key_data(legacy), *small))


def test_vmap_over_keys_equals_one_call_per_key(small):
    keys = jax.random.split(jax.random.key(4), 3)
    got = jax.vmap(lambda k: kalman_sample(k, *small))(keys)
    assert got.shape == (3, NS, 6, 3)
    for i in range(3):
        np.testing.assert_allclose(got[i], kalman_sample(keys[i], *small), rtol=1e-12,
                                   atol=1e-12)


def test_jit_of_vmap_over_trend_cycle_parameter_draws_equals_one_call_per_model():
    """As the lecture uses it: a stacked batch of models (and priors), one per posterior
    draw of the parameters, under jit."""
    _, _, _, y = trend_cycle_problem(T=20)
    params = tc.TrendCycleParams(*(jnp.array(v) for v in
                                   ([0.5, 0.7, 0.6], [0.02, 0.1, 0.05], [0.8, 0.5, 0.7],
                                    [1.2, 1.4, 0.5], [-0.3, -0.5, 0.2])))
    key = jax.random.key(5)

    def draw(p):
        mu0, Sigma0 = tc.initial_moments(p, y[0, 0])
        return kalman_sample(key, tc.trend_cycle_model(p), mu0, Sigma0, y, num_samples=4)

    got = jax.jit(jax.vmap(draw))(params)
    assert got.shape == (3, 4, 21, 4)
    for b in range(3):
        one = tc.TrendCycleParams(*(a[b] for a in params))
        np.testing.assert_allclose(got[b], draw(one), rtol=1e-10, atol=1e-9)


def test_draws_are_differentiable_with_respect_to_the_model(small):
    """For a fixed key each draw is a smooth function of A, C, G, H (the docstring's claim):
    jax.grad along a random direction equals a central difference."""
    model, mu0, Sigma0, y = small
    model = LSSModel(*(jnp.asarray(m) for m in model))
    weights = np.random.default_rng(12).normal(size=(NS, 6, 3))
    key = jax.random.key(13)

    def f(model):
        return jnp.sum(weights * kalman_sample(key, model, mu0, Sigma0, y))

    direction = random_like(jax.random.key(14), model)
    np.testing.assert_allclose(tree_dot(jax.grad(f)(model), direction),
                               central_difference(f, (model,), (direction,)), rtol=1e-6)


# ----- failures and refusals -------------------------------------------------------------

SCALAR = LSSModel(np.array([[0.9]]), np.array([[1.0]]), np.array([[1.0]]), np.array([[0.5]]))
# No shocks, no measurement error: with a known x_0, S_t = 0 at every t.
DEAD = LSSModel(np.array([[0.9]]), np.zeros((1, 1)), np.array([[1.0]]), np.zeros((1, 1)))
Y6 = np.random.default_rng(8).normal(size=(6, 1))


def test_failures_raise_eagerly_and_give_nan_for_that_member_only_under_jit_and_vmap():
    key = jax.random.key(9)
    with pytest.raises(ValueError, match="not positive definite"):
        kalman_sample(key, DEAD, np.zeros(1), np.zeros((1, 1)), Y6)
    with pytest.raises(ValueError, match="Sigma0"):
        kalman_sample(key, SCALAR, np.zeros(1), -np.eye(1), Y6)
    # Reachable under jit/vmap only: an indefinite prior (member 1), S_t = 0 (member 2).
    models = stack_models([SCALAR, SCALAR, DEAD, SCALAR])
    priors = jnp.array([[[1.0]], [[-100.0]], [[0.0]], [[2.0]]])
    got = jax.jit(jax.vmap(lambda m, S0: kalman_sample(key, m, np.zeros(1), S0, Y6)))(models,
                                                                                       priors)
    assert np.all(np.isnan(got[1:3]))
    for b in (0, 3):
        np.testing.assert_allclose(got[b], kalman_sample(key, SCALAR, np.zeros(1), priors[b], Y6),
                                   rtol=1e-12)


@pytest.mark.parametrize("key", [0, np.zeros(2), jax.random.split(jax.random.key(0), 2),
                                 jax.random.split(jax.random.PRNGKey(0), 2), None],
                         ids=["int", "float_array", "two_keys", "two_legacy_keys", "None"])
def test_a_bad_key_is_refused_by_name(key):
    with pytest.raises(ValueError, match="key"):
        kalman_sample(key, SCALAR, np.zeros(1), np.eye(1), Y6)


@pytest.mark.parametrize("num_samples", [0, -2, 2.5, True, "3", None])
def test_a_bad_num_samples_is_refused_by_name(num_samples):
    with pytest.raises(ValueError, match="num_samples"):
        kalman_sample(jax.random.key(0), SCALAR, np.zeros(1), np.eye(1), Y6,
                      num_samples=num_samples)


@pytest.mark.parametrize("name, args", [
    ("mu0", (SCALAR, np.zeros(2), np.eye(1), Y6)),
    ("Sigma0", (SCALAR, np.zeros(1), np.eye(2), Y6)),
    ("y", (SCALAR, np.zeros(1), np.eye(1), np.zeros((6, 2)))),
    ("y", (SCALAR, np.zeros(1), np.eye(1), np.zeros(6))),
    ("model.C", (SCALAR._replace(C=np.ones((2, 1))), np.zeros(1), np.eye(1), Y6)),
    ("jitter", None),
])
def test_wrong_shapes_and_settings_are_refused_by_name(name, args):
    kw = {}
    if args is None:
        args, kw = (SCALAR, np.zeros(1), np.eye(1), Y6), {"jitter": -1.0}
    with pytest.raises(ValueError, match=name):
        kalman_sample(jax.random.key(0), *args, **kw)
