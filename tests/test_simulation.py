import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_lss

from lecture_utils.gradcheck import central_difference
from lecture_utils.simulation import (
    LSSModel,
    lss_observation,
    lss_transition,
    simulate_lss,
    simulate_ssm,
    simulate_ssm_numpy,
)


def numpy_loop(model, x0, w, v):
    """The model's equations, one period at a time, in NumPy."""
    A, C, G, H = (np.asarray(m) for m in model)
    T = len(w)
    x = np.zeros((T + 1, len(x0)))
    y = np.zeros((T + 1, G.shape[0]))
    x[0] = x0
    for t in range(T):
        x[t + 1] = A @ x[t] + C @ w[t]
    for t in range(T + 1):
        y[t] = G @ x[t] + H @ v[t]
    return x, y


def draw(rng, model, T):
    N, K = np.shape(model.C)
    L = np.shape(model.H)[1]
    return rng.normal(size=N), rng.normal(size=(T, K)), rng.normal(size=(T + 1, L))


@pytest.mark.parametrize("dims,T", [((3, 2, 2, 2), 10), ((5, 5, 2, 2), 100), ((1, 1, 1, 1), 1)])
def test_simulate_lss_matches_numpy_loop(rng, dims, T):
    model = random_lss(rng, *dims)
    x0, w, v = draw(rng, model, T)
    x, y = simulate_lss(model, x0, w, v)
    x_ref, y_ref = numpy_loop(model, x0, w, v)
    assert x.shape == (T + 1, dims[0]) and y.shape == (T + 1, dims[2])
    assert x.dtype == y.dtype == jnp.float64
    np.testing.assert_allclose(x, x_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=1e-12)


def test_simulate_ssm_linear_callbacks_match_simulate_lss(rng):
    model = random_lss(rng)
    x0, w, v = draw(rng, model, 20)
    expected = simulate_lss(model, x0, w, v)
    jax_path = simulate_ssm(lss_transition, lss_observation, x0, w, v, model.H,
                            LSSModel(*map(jnp.asarray, model)))
    numpy_path = simulate_ssm_numpy(lss_transition, lss_observation, x0, w, v, model.H, model)
    for got in (jax_path, numpy_path):
        np.testing.assert_allclose(got[0], expected[0], atol=1e-12)
        np.testing.assert_allclose(got[1], expected[1], atol=1e-12)


def test_simulate_ssm_numpy_writes_into_given_buffers(rng):
    model = random_lss(rng)
    x0, w, v = draw(rng, model, 5)
    buffers = (np.full((6, 3), np.nan), np.full((6, 2), np.nan))
    x, y = simulate_ssm_numpy(lss_transition, lss_observation, x0, w, v, model.H, model,
                              out=buffers)
    assert x is buffers[0] and y is buffers[1]
    np.testing.assert_allclose(y, numpy_loop(model, x0, w, v)[1], atol=1e-12)


def test_simulate_ssm_without_observation_noise(rng):
    model = random_lss(rng)
    x0, w, _ = draw(rng, model, 8)
    x, y = simulate_ssm(lss_transition, lss_observation, x0, w, None, None,
                        LSSModel(*map(jnp.asarray, model)))
    np.testing.assert_allclose(y, x @ np.asarray(model.G).T, atol=1e-14)


def growth(x, w_t, p, t):
    """Log capital and log TFP; Cobb-Douglas output, fixed saving rate."""
    log_k, z = x[0], x[1]
    k = jnp.exp(log_k)
    k_next = p["s"] * jnp.exp(z) * k ** p["alpha"] + (1 - p["delta"]) * k
    return jnp.stack([jnp.log(k_next), p["rho"] * z + p["sigma"] * w_t[0]])


def growth_numpy(x, w_t, p, t):
    k = np.exp(x[0])
    k_next = p["s"] * np.exp(x[1]) * k ** p["alpha"] + (1 - p["delta"]) * k
    return np.array([np.log(k_next), p["rho"] * x[1] + p["sigma"] * w_t[0]])


def log_output(x, p, t):
    return (x[1] + p["alpha"] * x[0])[None]


def test_nonlinear_model_matches_numpy_and_its_derivative_matches_fd(rng):
    p = {"s": 0.25, "alpha": 0.33, "delta": 0.1, "rho": 0.9, "sigma": 0.02}
    x0, w, v, H = np.array([1.0, 0.0]), rng.normal(size=(40, 1)), rng.normal(size=(41, 1)), [[0.01]]
    x, y = simulate_ssm(growth, log_output, x0, w, v, H, p)
    x_ref, y_ref = simulate_ssm_numpy(growth_numpy, log_output, x0, w, v, np.array(H), p)
    np.testing.assert_allclose(x, x_ref, atol=1e-12)
    np.testing.assert_allclose(y, y_ref, atol=1e-12)

    def mean_output(alpha):
        return simulate_ssm(growth, log_output, x0, w, v, H, {**p, "alpha": alpha})[1].mean()

    eps = 1e-6
    fd = (mean_output(0.33 + eps) - mean_output(0.33 - eps)) / (2 * eps)
    np.testing.assert_allclose(jax.grad(mean_output)(0.33), fd, rtol=1e-7)


def test_simulate_lss_under_jit_grad_and_vmap(rng):
    model = LSSModel(*map(jnp.asarray, random_lss(rng)))
    x0, w, v = draw(rng, model, 6)
    f = jax.jit(lambda m, w: simulate_lss(m, x0, w, v)[1].sum())
    g_model, g_w = jax.grad(f, argnums=(0, 1))(model, w)
    # The gradient is an LSSModel whose every leaf matches central differences.
    assert isinstance(g_model, LSSModel)
    for name in LSSModel._fields:
        direction = jnp.asarray(rng.normal(size=getattr(model, name).shape))
        fd = central_difference(lambda m: f(model._replace(**{name: m}), w),
                                (getattr(model, name),), (direction,))
        np.testing.assert_allclose(jnp.vdot(getattr(g_model, name), direction), fd,
                                   rtol=1e-6, err_msg=name)
    # d(sum y)/dw is exact: y[t] = G x[t] + H v[t] with x[t] linear in w[:t].
    fd = central_difference(lambda w_: f(model, w_), (w,), (jnp.ones_like(w),))
    np.testing.assert_allclose(g_w.sum(), fd, rtol=1e-7)
    ws = jnp.stack([w, 2 * w])
    batched = jax.vmap(lambda w: simulate_lss(model, x0, w, v)[0])(ws)
    np.testing.assert_allclose(batched[1], simulate_lss(model, x0, 2 * w, v)[0], atol=1e-14)


# ----- bad input -------------------------------------------------------------------------


@pytest.fixture
def good(rng):
    model = random_lss(rng)
    x0, w, v = draw(rng, model, 4)
    return model, x0, w, v


@pytest.mark.parametrize("field,shape,message", [
    ("A", (3, 2), r"model.A must be square \(N, N\), got \(3, 2\)"),
    ("C", (2, 2), r"model.C must have shape \(3, \?\), got \(2, 2\)"),
    ("G", (2, 4), r"model.G must have shape \(\?, 3\), got \(2, 4\)"),
    ("H", (3, 2), r"model.H must have shape \(2, \?\), got \(3, 2\)"),
])
def test_bad_model_shapes_name_the_field(good, field, shape, message):
    model, x0, w, v = good
    with pytest.raises(ValueError, match=message):
        simulate_lss(model._replace(**{field: np.ones(shape)}), x0, w, v)


@pytest.mark.parametrize("arg,value,message", [
    ("x0", np.ones(2), r"x0 must have shape \(3,\), got \(2,\)"),
    ("x0", np.ones((3, 1)), r"x0 must have shape \(3,\), got \(3, 1\)"),
    ("w", np.ones((4, 3)), r"w must have shape \(\?, 2\), got \(4, 3\)"),
    ("w", np.ones((0, 2)), r"w must have at least one row"),
    ("v", np.ones((4, 2)), r"v must have shape \(5, 2\), got \(4, 2\)"),
    ("v", np.ones((5, 2), dtype=complex), r"v must be real"),
    ("w", np.array([["a", "b"]] * 4), r"w must be a real numeric array"),
])
def test_bad_inputs_name_the_argument_and_shapes(good, arg, value, message):
    model, x0, w, v = good
    args = {"x0": x0, "w": w, "v": v, arg: value}
    with pytest.raises(ValueError, match=message):
        simulate_lss(model, **args)


def test_model_must_be_an_lss_model(good):
    model, x0, w, v = good
    with pytest.raises(ValueError, match="model must be an LSSModel, got tuple"):
        simulate_lss(tuple(model), x0, w, v)


def test_float32_input_is_promoted_not_mixed(good):
    model, x0, w, v = good
    x32, y32 = simulate_lss(LSSModel(*(np.float32(m) for m in model)), np.float32(x0),
                            np.float32(w), np.float32(v))
    assert x32.dtype == y32.dtype == jnp.float64
    x, _ = simulate_lss(LSSModel(*(np.float64(np.float32(m)) for m in model)),
                        np.float64(np.float32(x0)), np.float64(np.float32(w)),
                        np.float64(np.float32(v)))
    np.testing.assert_array_equal(x32, x)


def test_simulate_ssm_checks_callback_and_noise_shapes(good):
    model, x0, w, v = good
    jmodel = LSSModel(*map(jnp.asarray, model))
    with pytest.raises(ValueError, match=r"f must return shape \(3,\) like x0, got \(2,\)"):
        simulate_ssm(lambda x, w, p, t: x[:2], lss_observation, x0, w, v, model.H, jmodel)
    with pytest.raises(ValueError, match=r"H must have shape \(2, 2\), got \(3, 2\)"):
        simulate_ssm(lss_transition, lss_observation, x0, w, v, np.ones((3, 2)), jmodel)
    with pytest.raises(ValueError, match=r"g must return a vector"):
        simulate_ssm(lss_transition, lambda x, p, t: x.sum(), x0, w, v, None, jmodel)
    with pytest.raises(ValueError, match=r"v must have shape \(5, 2\)"):
        simulate_ssm(lss_transition, lss_observation, x0, w, v[:3], model.H, jmodel)
