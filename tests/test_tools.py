"""gradcheck, optim and timing: the checks must pass on right answers and fail on wrong ones."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from lecture_utils.gradcheck import assert_trees_allclose, central_difference, check_jvp, check_vjp
from lecture_utils.optim import lbfgs_minimize
from lecture_utils.timing import compiled_temp_bytes, time_jitted, time_python


@jax.custom_jvp
def wrong_forward(x):
    return jnp.sin(x)


@wrong_forward.defjvp
def _wrong_forward_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    return jnp.sin(x), 1.01 * jnp.cos(x) * dx


def test_central_difference_on_pytrees():
    f = lambda p: {"out": p["a"] ** 2 * p["b"]}
    d = central_difference(f, ({"a": 2.0, "b": 3.0},), ({"a": 1.0, "b": 0.0},))
    np.testing.assert_allclose(d["out"], 12.0, rtol=1e-9)


def test_check_jvp_passes_and_fails():
    x = jnp.linspace(0.1, 1.0, 5)
    check_jvp(jnp.sin, (x,), (jnp.ones(5),))
    with pytest.raises(AssertionError):
        check_jvp(wrong_forward, (x,), (jnp.ones(5),))


def test_check_vjp_passes_and_fails():
    x = jnp.linspace(0.1, 1.0, 5)
    check_vjp(lambda x: jnp.sin(x) * x, (x,), key=jax.random.key(0))
    # Forward and reverse agree with each other here (reverse mode is the
    # transpose of the wrong rule), so it is the finite difference that catches it.
    with pytest.raises(AssertionError, match="reverse mode vs central difference"):
        check_vjp(wrong_forward, (x,), key=jax.random.key(0))


def test_assert_trees_allclose_reports_structure_and_values():
    assert_trees_allclose({"a": 1.0}, {"a": 1.0 + 1e-12})
    with pytest.raises(AssertionError, match="structures differ"):
        assert_trees_allclose({"a": 1.0}, {"b": 1.0})
    with pytest.raises(AssertionError):
        assert_trees_allclose({"a": 1.0}, {"a": 1.1})


def test_lbfgs_matches_scipy_on_rosenbrock():
    def rosen(p):
        return jnp.sum(100.0 * (p["x"][1:] - p["x"][:-1] ** 2) ** 2 + (1 - p["x"][:-1]) ** 2)

    x0 = jnp.array([-1.2, 1.0, 0.5, -0.3])
    result = lbfgs_minimize(rosen, {"x": x0}, max_iter=1000, tol=1e-9)
    reference = scipy.optimize.minimize(scipy.optimize.rosen, np.asarray(x0),
                                        jac=scipy.optimize.rosen_der, method="BFGS", tol=1e-12)
    np.testing.assert_allclose(result.params["x"], reference.x, atol=1e-6)
    assert result.grad_norm < 1e-9 and 0 < result.iterations < 1000


def test_timing_helpers_return_positive_times_and_bytes():
    x = jnp.ones((50, 50))
    t = time_jitted(lambda x: x @ x, x, repeat=3, min_sample_s=1e-3)
    assert t.compile_s > 0 and t.run_s > 0 and t.samples == 3
    assert time_python(np.dot, np.ones(3), np.ones(3), repeat=3, min_sample_s=1e-3) > 0
    assert compiled_temp_bytes(lambda x: (x @ x) @ x, x) >= 0
