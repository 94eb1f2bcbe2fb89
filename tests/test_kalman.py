import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from conftest import random_lss
from jax.test_util import check_grads

from lecture_utils.gradcheck import check_jvp, check_vjp, random_like
from lecture_utils.kalman import kalman_filter, kalman_filter_numpy, steady_state_gain
from lecture_utils.simulation import LSSModel, simulate_lss


def simulate_data(rng, model, T, mu0, Sigma0):
    """Observations y (T, M) of x_1..x_T with x_0 ~ N(mu0, Sigma0); also the states."""
    N, K = np.shape(model.C)
    x0 = rng.multivariate_normal(mu0, Sigma0)
    x, y = simulate_lss(model, x0, rng.normal(size=(T, K)),
                        rng.normal(size=(T + 1, np.shape(model.H)[1])))
    return x, y[1:]


def dense_gaussian_loglik(model, mu0, Sigma0, y):
    """log p(y_1..y_T) as one multivariate normal of dimension T*M."""
    A, C, G, H = (np.asarray(m) for m in model)
    T, M = y.shape
    P = [np.asarray(Sigma0)]
    for _ in range(T):
        P.append(A @ P[-1] @ A.T + C @ C.T)
    mean = np.concatenate([G @ np.linalg.matrix_power(A, t) @ mu0 for t in range(1, T + 1)])
    cov = np.zeros((T * M, T * M))
    for s in range(1, T + 1):
        for t in range(1, s + 1):
            block = G @ np.linalg.matrix_power(A, s - t) @ P[t] @ G.T
            if s == t:
                block = block + H @ H.T
            cov[(s - 1) * M:s * M, (t - 1) * M:t * M] = block
            cov[(t - 1) * M:t * M, (s - 1) * M:s * M] = block.T
    return scipy.stats.multivariate_normal(mean, cov).logpdf(y.ravel())


@pytest.fixture
def problem(rng):
    model = random_lss(rng, N=3, K=2, M=2, L=2)
    mu0, Sigma0 = rng.normal(size=3), np.eye(3) * 0.5
    _, y = simulate_data(rng, model, 25, mu0, Sigma0)
    return model, mu0, Sigma0, y


def test_shapes_and_first_row(problem):
    model, mu0, Sigma0, y = problem
    r = kalman_filter(model, mu0, Sigma0, y)
    assert r.loglik.shape == ()
    assert r.mu.shape == (26, 3) and r.Sigma.shape == (26, 3, 3)
    assert r.gain.shape == (25, 3, 2) and r.innovation.shape == (25, 2)
    assert r.innovation_cov.shape == (25, 2, 2)
    np.testing.assert_array_equal(r.mu[0], mu0)
    np.testing.assert_array_equal(r.Sigma[0], Sigma0)


@pytest.mark.parametrize("seed", range(3))
def test_matches_numpy_reference(seed):
    rng = np.random.default_rng(seed)
    model = random_lss(rng, N=4, K=3, M=2, L=2)
    mu0, Sigma0 = rng.normal(size=4), np.diag(rng.uniform(0.5, 2, size=4))
    _, y = simulate_data(rng, model, 60, mu0, Sigma0)
    r = kalman_filter(model, mu0, Sigma0, y)
    loglik, mu, Sigma, gain = kalman_filter_numpy(model, mu0, Sigma0, y)
    np.testing.assert_allclose(r.loglik, loglik, rtol=1e-10)
    np.testing.assert_allclose(r.mu, mu, atol=1e-10)
    np.testing.assert_allclose(r.Sigma, Sigma, atol=1e-10)
    np.testing.assert_allclose(r.gain, gain, atol=1e-10)


@pytest.mark.parametrize("seed", range(3))
def test_loglik_equals_dense_gaussian(seed):
    rng = np.random.default_rng(100 + seed)
    model = random_lss(rng, N=3, K=2, M=2, L=2)
    mu0, Sigma0 = rng.normal(size=3), np.eye(3)
    _, y = simulate_data(rng, model, 12, mu0, Sigma0)
    r = kalman_filter(model, mu0, Sigma0, y, jitter=0.0)
    np.testing.assert_allclose(r.loglik, dense_gaussian_loglik(model, mu0, Sigma0, y), rtol=1e-9)


def statsmodels_filter(model, mu0, Sigma0, y):
    from statsmodels.tsa.statespace.kalman_filter import KalmanFilter

    A, C, G, H = (np.asarray(m) for m in model)
    N, K = C.shape
    kf = KalmanFilter(k_endog=G.shape[0], k_states=N, k_posdef=K)
    kf.bind(np.asarray(y))
    kf["design"], kf["obs_cov"] = G, H @ H.T
    kf["transition"], kf["selection"], kf["state_cov"] = A, C, np.eye(K)
    # statsmodels' alpha_1 is our x_1 = A x_0 + C w: its prior is the predicted one.
    kf.initialize_known(A @ mu0, A @ Sigma0 @ A.T + C @ C.T)
    res = kf.filter()
    return res.llf, res.filtered_state.T


@pytest.mark.parametrize("seed", range(4))
def test_matches_statsmodels_on_random_models(seed):
    rng = np.random.default_rng(200 + seed)
    N, M = int(rng.integers(1, 6)), int(rng.integers(1, 4))
    K = int(rng.integers(1, N + 1))  # statsmodels needs K <= N
    L = M + int(rng.integers(0, 2))  # L >= M keeps H H' positive definite
    model = random_lss(rng, N=N, K=K, M=M, L=L)
    mu0, Sigma0 = rng.normal(size=N), np.eye(N)
    _, y = simulate_data(rng, model, 50, mu0, Sigma0)
    r = kalman_filter(model, mu0, Sigma0, y, jitter=0.0)
    llf, filtered = statsmodels_filter(model, mu0, Sigma0, y)
    np.testing.assert_allclose(r.loglik, llf, rtol=1e-9)
    np.testing.assert_allclose(r.mu[1:], filtered, atol=1e-8)


def test_gain_converges_to_riccati_steady_state(rng):
    model = LSSModel(np.array([[0.9, 0.1], [-0.1, 0.8]]), 0.1 * np.eye(2), np.eye(2),
                     0.05 * np.eye(2))
    _, y = simulate_data(rng, model, 200, np.zeros(2), np.eye(2))
    r = kalman_filter(model, np.zeros(2), np.eye(2), y, jitter=0.0)
    np.testing.assert_allclose(r.gain[-1], steady_state_gain(model), rtol=1e-6)


def test_gradients_against_finite_differences(problem, key):
    model, mu0, Sigma0, y = problem
    model = LSSModel(*map(jnp.asarray, model))
    y = jnp.asarray(y[:8])

    def loglik(model, mu0):
        return kalman_filter(model, mu0, Sigma0, y).loglik

    check_grads(loglik, (model, jnp.asarray(mu0)), order=1, modes=["fwd", "rev"])
    check_vjp(loglik, (model, jnp.asarray(mu0)), key=key, rtol=1e-6)
    # Each model matrix and mu0 on its own, along a random direction.
    grads = jax.grad(loglik, argnums=(0, 1))(model, jnp.asarray(mu0))
    for i, name in enumerate(["A", "C", "G", "H", "mu0"]):
        direction = random_like(jax.random.fold_in(key, i), grads[0][i] if i < 4 else grads[1])
        if name == "mu0":
            fd = check_jvp(lambda m: loglik(model, m), (jnp.asarray(mu0),), (direction,))
            np.testing.assert_allclose(jnp.vdot(grads[1], direction), fd, rtol=1e-6)
        else:
            f = lambda mat, i=i: loglik(model._replace(**{"ACGH"[i]: mat}), jnp.asarray(mu0))
            fd = check_jvp(f, (model[i],), (direction,))
            np.testing.assert_allclose(jnp.vdot(grads[0][i], direction), fd, rtol=1e-6,
                                       err_msg=name)


def test_works_under_jit_and_vmap(problem):
    model, mu0, Sigma0, y = problem
    model = LSSModel(*map(jnp.asarray, model))
    f = jax.jit(lambda A: kalman_filter(model._replace(A=A), mu0, Sigma0, y).loglik)
    batch = jax.vmap(f)(jnp.stack([model.A, 0.5 * model.A]))
    np.testing.assert_allclose(batch[0], kalman_filter(model, mu0, Sigma0, y).loglik, rtol=1e-12)


# ----- bad input ---------------------------------------------------------------------


@pytest.mark.parametrize("arg,value,message", [
    ("mu0", np.zeros(2), r"mu0 must have shape \(3,\), got \(2,\)"),
    ("Sigma0", np.eye(2), r"Sigma0 must have shape \(3, 3\), got \(2, 2\)"),
    ("y", np.zeros((10, 3)), r"y must have shape \(\?, 2\), got \(10, 3\)"),
    ("y", np.zeros(10), r"y must have shape \(\?, 2\), got \(10,\)"),
])
def test_bad_shapes(problem, arg, value, message):
    model, mu0, Sigma0, y = problem
    args = {"mu0": mu0, "Sigma0": Sigma0, "y": y, arg: value}
    with pytest.raises(ValueError, match=message):
        kalman_filter(model, **args)


def test_nan_observations_are_refused(problem):
    model, mu0, Sigma0, y = problem
    y = np.array(y)
    y[[3, 7], 1] = np.nan
    with pytest.raises(ValueError, match=r"y has NaN or infinite entries in rows \[3, 7\]"):
        kalman_filter(model, mu0, Sigma0, y)


def test_sigma0_must_be_positive_semidefinite(problem):
    model, mu0, _, y = problem
    with pytest.raises(ValueError, match="Sigma0 must be symmetric positive semi-definite"):
        kalman_filter(model, mu0, -np.eye(3), y)
    with pytest.raises(ValueError, match="Sigma0 must be symmetric"):
        kalman_filter(model, mu0, np.triu(np.ones((3, 3))), y)


def singular_model():
    # Three observables of a two-dimensional state with no measurement noise:
    # S_t has rank two and cannot be factored.
    return LSSModel(0.5 * np.eye(2), np.eye(2), np.ones((3, 2)), np.zeros((3, 1)))


def test_non_positive_definite_innovation_covariance_raises():
    with pytest.raises(ValueError, match=r"not positive definite \(first at t = 0\)"):
        kalman_filter(singular_model(), np.zeros(2), np.eye(2), np.ones((4, 3)), jitter=0.0)


def test_non_positive_definite_under_jit_gives_minus_inf_not_nan():
    model = singular_model()
    f = jax.jit(lambda y: kalman_filter(model, np.zeros(2), np.eye(2), y, jitter=0.0).loglik)
    assert f(jnp.ones((4, 3))) == -jnp.inf
    # The default jitter makes the same model usable.
    assert np.isfinite(kalman_filter(model, np.zeros(2), np.eye(2), np.ones((4, 3))).loglik)


def test_many_observables_use_the_library_routines_and_agree(rng):
    # M above MAX_UNROLLED_M takes the jnp.linalg branch.
    model = random_lss(rng, N=4, K=3, M=8, L=8)
    mu0, Sigma0 = np.zeros(4), np.eye(4)
    _, y = simulate_data(rng, model, 30, mu0, Sigma0)
    r = kalman_filter(model, mu0, Sigma0, y)
    loglik, mu, _, _ = kalman_filter_numpy(model, mu0, Sigma0, y)
    np.testing.assert_allclose(r.loglik, loglik, rtol=1e-10)
    np.testing.assert_allclose(r.mu, mu, atol=1e-10)
