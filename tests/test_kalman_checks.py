"""One validator for every entry point, and failure that stays finite.

Every public entry point (sequential, parallel, log-likelihood, smoother, batch,
sharded) is called through a single-model adapter, so each check below runs
against all six.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import as_jax, random_lss, random_rotation, simulate_data, stack_models

from lecture_utils.gradcheck import assert_trees_close_normwise
from lecture_utils.kalman import (
    kalman_filter,
    kalman_filter_numpy,
    kalman_loglik,
    kalman_loglik_batch,
    kalman_loglik_sharded,
    kalman_smoother,
)
from lecture_utils.simulation import LSSModel


def _batched(f):
    """A batch function called with one model (twice) and shared prior and data."""
    return lambda model, mu0, Sigma0, y, **kw: f(stack_models([model, model]), mu0, Sigma0, y,
                                                 **kw)


ENTRY_POINTS = {
    "filter": kalman_filter,
    "parallel": lambda *args, **kw: kalman_filter(*args, method="parallel", **kw),
    "loglik": kalman_loglik,
    "smoother": kalman_smoother,
    "batch": _batched(kalman_loglik_batch),
    "sharded": _batched(kalman_loglik_sharded),
}
BATCHED = ("batch", "sharded")


@pytest.fixture
def problem(rng):
    model = random_lss(rng, N=3, K=2, M=2, L=2)
    mu0, Sigma0 = rng.normal(size=3), 0.5 * np.eye(3)
    return model, mu0, Sigma0, simulate_data(rng, model, 4, mu0, Sigma0)


# ----- shapes --------------------------------------------------------------------------

# (argument, bad value, the name in the message, expected shape, actual shape) for
# single-model entry points; batch ones prefix the model's fields with "models." and B.
BAD_SHAPES = [
    ("mu0", np.zeros(2), "mu0", r"\(3,\)", r"\(2,\)"),
    ("mu0", np.zeros((3, 1)), "mu0", r"\(3,\)", r"\(3, 1\)"),
    ("Sigma0", np.eye(2), "Sigma0", r"\(3, 3\)", r"\(2, 2\)"),
    ("y", np.zeros((10, 3)), "y", r"\(\?, 2\)", r"\(10, 3\)"),
    ("y", np.zeros(10), "y", r"\(\?, 2\)", r"\(10,\)"),
    ("C", np.zeros((2, 2)), "C", r"\(3, \?\)", r"\(2, 2\)"),
    ("G", np.zeros((2, 4)), "G", r"\(\?, 3\)", r"\(2, 4\)"),
    ("H", np.zeros((3, 2)), "H", r"\(2, \?\)", r"\(3, 2\)"),
]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("arg,value,name,expected,actual", BAD_SHAPES,
                         ids=[f"{b[0]}{np.shape(b[1])}" for b in BAD_SHAPES])
def test_wrong_shapes_name_the_argument_and_both_shapes(problem, entry, arg, value, name,
                                                        expected, actual):
    model, mu0, Sigma0, y = problem
    args = {"model": model, "mu0": mu0, "Sigma0": Sigma0, "y": y}
    if arg in "ACGH":
        args["model"] = model._replace(**{arg: value})
    else:
        args[arg] = value
    if entry in BATCHED and arg in "ACGH":  # the stacked model: (B, ...) shapes
        name = rf"models\.{name}"
        expected, actual = expected.replace(r"\(", r"\(2, "), actual.replace(r"\(", r"\(2, ")
    elif arg in "ACGH":
        name = rf"model\.{name}"
    elif entry in BATCHED and arg == "mu0" and np.ndim(value) == 2:
        expected = r"\(2, 3\)"  # a 2-d mu0 is read as one prior mean per model
    with pytest.raises(ValueError, match=rf"{name} must have shape {expected}, got {actual}"):
        ENTRY_POINTS[entry](*args.values())


# ----- non-finite inputs ---------------------------------------------------------------


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("arg", ["A", "C", "G", "H", "mu0", "Sigma0"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_model_or_prior_is_refused_by_name(problem, entry, arg, bad):
    model, mu0, Sigma0, y = problem
    args = {"model": model, "mu0": np.array(mu0), "Sigma0": np.array(Sigma0), "y": y}
    if arg in "ACGH":
        value = np.array(getattr(model, arg))
        value[0, 0] = bad
        args["model"] = model._replace(**{arg: value})
        name = rf"models?\.{arg}"
    else:
        args[arg][0] = bad  # Sigma0: a whole row
        name = arg
    with pytest.raises(ValueError, match=rf"\b{name}\b") as info:
        ENTRY_POINTS[entry](*args.values())
    assert "S_t" not in str(info.value)


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_infinite_observation_is_refused(problem, entry):
    model, mu0, Sigma0, y = problem
    y = np.array(y)
    y[2, 0] = np.inf
    with pytest.raises(ValueError, match=r"\by\b.*infinite"):
        ENTRY_POINTS[entry](model, mu0, Sigma0, y)


# ----- the prior covariance ---------------------------------------------------------------


def rotated_rank_two_priors(n=40):
    """Q diag(1e4, 3e4, 0) Q' for random rotations Q: valid, and singular by construction."""
    rng = np.random.default_rng(5)
    out = []
    for _ in range(n):
        Q = random_rotation(rng, 3)
        out.append(Q @ np.diag([1e4, 3e4, 0.0]) @ Q.T)
    return out


@pytest.mark.parametrize("entry", [e for e in ENTRY_POINTS if e not in BATCHED])
def test_rank_two_prior_with_large_entries_is_accepted(problem, entry):
    model, mu0, _, y = problem
    priors = rotated_rank_two_priors()
    # Rounding makes some of them slightly asymmetric or slightly indefinite.
    assert max(np.abs(S - S.T).max() for S in priors) > 0
    assert min(np.linalg.eigvalsh(S).min() for S in priors) < 0
    for Sigma0 in priors:
        ENTRY_POINTS[entry](model, mu0, Sigma0, y)


def test_rank_two_priors_are_accepted_by_the_batch_functions(problem):
    model, mu0, _, y = problem
    priors = np.stack(rotated_rank_two_priors())
    models = stack_models([model] * len(priors))
    got = kalman_loglik_batch(models, mu0, priors, y)
    np.testing.assert_allclose(got, kalman_loglik_sharded(models, mu0, priors, y), rtol=1e-12)
    for b in (0, 17, 39):  # and the values are right, against the tests' loop
        np.testing.assert_allclose(got[b], kalman_filter_numpy(model, mu0, priors[b], y, jitter=1e-8).loglik,
                                   rtol=1e-9)
    pair = stack_models([model] * 2)
    for Sigma0 in priors:  # shared prior
        kalman_loglik_batch(pair, mu0, Sigma0, y)
        kalman_loglik_sharded(pair, mu0, Sigma0, y)


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_negative_definite_or_asymmetric_prior_is_refused(problem, entry):
    model, mu0, _, y = problem
    with pytest.raises(ValueError, match="Sigma0 must be .*positive semi-definite"):
        ENTRY_POINTS[entry](model, mu0, -np.eye(3), y)
    with pytest.raises(ValueError, match="Sigma0 must be symmetric"):
        ENTRY_POINTS[entry](model, mu0, np.triu(np.ones((3, 3))), y)
    if entry in BATCHED:  # one bad prior among per-model priors
        Sigma0 = np.stack([np.eye(3), np.diag([1.0, -1.0, 1.0])])
        with pytest.raises(ValueError, match="Sigma0 must be .*positive semi-definite"):
            ENTRY_POINTS[entry](model, mu0, Sigma0, y)


# ----- failure is finite ------------------------------------------------------------------


def failing_model():
    """The second series is observed exactly and is always 0: S_t[1, 1] = 0 at every t,
    whatever the (relative) jitter."""
    return LSSModel(np.array([[0.5, 0.2], [0.0, 0.8]]), np.eye(2),
                    np.array([[1.0, 0.5], [0.0, 0.0]]), np.zeros((2, 2)))


def good_model():
    return LSSModel(np.array([[0.5, 0.2], [0.0, 0.8]]), np.eye(2),
                    np.array([[1.0, 0.5], [0.3, 1.0]]), 0.5 * np.eye(2))


Y = np.array([[0.3, 0.0], [-0.2, 0.0], [0.1, 0.0], [0.4, 0.0]])
PRIOR = (np.zeros(2), np.eye(2))


@pytest.mark.parametrize("entry", ["filter", "parallel", "loglik", "smoother"])
def test_eager_calls_raise_when_S_is_not_positive_definite(entry):
    with pytest.raises(ValueError, match="positive definite"):
        ENTRY_POINTS[entry](failing_model(), *PRIOR, Y)


def test_rank_deficient_S_fails_without_jitter_and_is_rescued_by_relative_jitter():
    # Two identical noiseless observations of one combination: S_t has rank one but a
    # positive diagonal, which the relative jitter makes positive definite. (A = 0 makes
    # S_t = [[1, 1], [1, 1]] exactly, so that the second pivot is exactly 0, not rounding.)
    model = LSSModel(np.zeros((2, 2)), np.eye(2), np.array([[1.0, 0.0], [1.0, 0.0]]),
                     np.zeros((2, 1)))
    y = np.ones((4, 2))
    with pytest.raises(ValueError, match="positive definite"):
        kalman_filter(model, *PRIOR, y, jitter=0.0)
    got = kalman_filter(model, *PRIOR, y, jitter=1e-6).loglik
    np.testing.assert_allclose(got, kalman_filter_numpy(model, *PRIOR, y, jitter=1e-6).loglik,
                               rtol=1e-7)


def filter_loglik(model, mu0, Sigma0, y):
    return kalman_filter(model, mu0, Sigma0, y).loglik


@pytest.mark.parametrize("f", [filter_loglik, kalman_loglik], ids=["filter", "loglik"])
def test_under_jit_and_grad_failure_is_minus_inf_with_a_finite_gradient(f):
    args = (as_jax(failing_model()), jnp.asarray(PRIOR[0]), jnp.asarray(PRIOR[1]),
            jnp.asarray(Y))
    assert jax.jit(f)(*args) == -jnp.inf
    value, grads = jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2, 3)))(*args)
    assert value == -jnp.inf
    for leaf in jax.tree.leaves(grads):
        assert np.all(np.isfinite(leaf))


def test_under_vmap_a_failing_model_leaves_the_other_exact():
    models = as_jax(stack_models([good_model(), failing_model()]))
    got = jax.vmap(lambda m: kalman_loglik(m, *PRIOR, Y))(models)
    assert got[1] == -np.inf
    np.testing.assert_allclose(got[0], kalman_filter_numpy(good_model(), *PRIOR, Y, jitter=1e-8).loglik,
                               rtol=1e-10)
    assert got[0] == kalman_loglik(good_model(), *PRIOR, Y)


@pytest.mark.parametrize("batch", [kalman_loglik_batch, kalman_loglik_sharded],
                         ids=["batch", "sharded"])
def test_a_failing_model_in_a_batch_leaves_the_others_and_their_gradients(batch):
    rng = np.random.default_rng(3)
    models = [good_model()._replace(A=good_model().A + 0.1 * rng.normal(size=(2, 2)))
              for _ in range(4)]
    models[2] = failing_model()
    stacked = as_jax(stack_models(models))
    got = batch(stacked, *PRIOR, Y)
    assert got[2] == -np.inf
    single = jax.jit(kalman_loglik)
    for b in (0, 1, 3):
        np.testing.assert_allclose(got[b], single(as_jax(models[b]), *PRIOR, Y), rtol=1e-13)
        np.testing.assert_allclose(got[b], kalman_filter_numpy(models[b], *PRIOR, Y, jitter=1e-8).loglik,
                                   rtol=1e-10)
    # Gradients: the sum's gradient holds each model's own gradient in its slice.
    grads = jax.grad(lambda m: jnp.sum(batch(m, *PRIOR, Y)))(stacked)
    for leaf in jax.tree.leaves(grads):
        assert np.all(np.isfinite(leaf))
    g_single = jax.jit(jax.grad(kalman_loglik))
    for b in (0, 1, 3):
        assert_trees_close_normwise(jax.tree.map(lambda x: x[b], grads),
                                    g_single(as_jax(models[b]), *PRIOR, Y), rtol=1e-10,
                                    err_msg=f"model {b}")
