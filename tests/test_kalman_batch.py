"""The batched and sharded log-likelihoods, model by model, against the single filter and
independent NumPy loops; every model of the batch is checked, not just the first."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import as_jax, random_direction, random_lss, simulate_data, stack_models, with_missing

from lecture_utils.gradcheck import assert_trees_close_normwise, central_difference, tree_dot
from lecture_utils.kalman import (
    kalman_filter,
    kalman_filter_numpy,
    kalman_loglik,
    kalman_loglik_batch,
    kalman_loglik_sharded,
)

T = 25


def random_batch(rng, B, N=3, M=2, T=T, missing=False):
    """B random models (stacked), per-model priors and per-model data simulated from them."""
    models = [random_lss(rng, N=N, K=2, M=M, L=M) for _ in range(B)]
    mu0 = rng.normal(size=(B, N))
    Sigma0 = np.stack([np.eye(N) * s for s in rng.uniform(0.5, 2.0, size=B)])
    y = np.stack([simulate_data(rng, m, T, a, b) for m, a, b in zip(models, mu0, Sigma0)])
    if missing:
        y = np.stack([with_missing(rng, yb, 0.1) for yb in y])
    return models, stack_models(models), mu0, Sigma0, y


def one_by_one(models, mu0, Sigma0, y, jitter):
    return np.array([kalman_loglik(m, a, b, c, jitter=jitter)
                     for m, a, b, c in zip(models, mu0, Sigma0, y)])


@pytest.mark.parametrize("B", [1, 7, 130])  # one chunk, several models, chunks with padding
def test_batch_equals_single_filter_and_numpy_reference_for_every_model(rng, B):
    models, stacked, mu0, Sigma0, y = random_batch(rng, B, missing=True)
    got = np.asarray(kalman_loglik_batch(stacked, mu0, Sigma0, y, jitter=0.0))
    assert got.shape == (B,)
    np.testing.assert_allclose(got, one_by_one(models, mu0, Sigma0, y, jitter=0.0), rtol=1e-10)
    want = [kalman_filter_numpy(m, a, b, c, jitter=0.0).loglik for m, a, b, c in zip(models, mu0, Sigma0, y)]
    np.testing.assert_allclose(got, want, rtol=1e-10)
    if B == 7:  # the package's own NumPy reference too (no missing data there)
        _, stacked, mu0, Sigma0, y = random_batch(rng, B)
        got = kalman_loglik_batch(stacked, mu0, Sigma0, y, jitter=0.0)
        want = [kalman_filter_numpy(jax.tree.map(lambda x: x[b], stacked), mu0[b], Sigma0[b],
                                    y[b], jitter=0.0)[0] for b in range(B)]
        np.testing.assert_allclose(got, want, rtol=1e-10)


@pytest.mark.parametrize("chunk", [1, 3, 7, 100])
def test_chunk_keyword_does_not_change_the_values(rng, chunk):
    models, stacked, mu0, Sigma0, y = random_batch(rng, 7)
    got = kalman_loglik_batch(stacked, mu0, Sigma0, y, chunk=chunk)
    want = [kalman_filter_numpy(m, a, b, c, jitter=1e-8).loglik
            for m, a, b, c in zip(models, mu0, Sigma0, y)]
    np.testing.assert_allclose(got, want, rtol=1e-10)


@pytest.mark.parametrize("shared", ["mu0", "Sigma0", "y", "all"])
def test_shared_and_per_model_arguments_broadcast(rng, shared):
    models, stacked, mu0, Sigma0, y = random_batch(rng, 5)
    per_model = {"mu0": mu0, "Sigma0": Sigma0, "y": y}
    args = dict(per_model)
    for name in (per_model if shared == "all" else [shared]):
        args[name] = per_model[name][0]  # one array for every model ...
        per_model[name] = [per_model[name][0]] * 5  # ... which is what each model sees
    got = kalman_loglik_batch(stacked, **args)
    want = [kalman_filter_numpy(m, a, b, c, jitter=1e-8).loglik
            for m, a, b, c in zip(models, per_model["mu0"], per_model["Sigma0"],
                                  per_model["y"])]
    np.testing.assert_allclose(got, want, rtol=1e-10)
    np.testing.assert_allclose(kalman_loglik_sharded(stacked, **args), want, rtol=1e-10)


def test_many_observables_fall_back_to_vmap(rng):
    models, stacked, mu0, Sigma0, y = random_batch(rng, 3, N=4, M=8, T=10)
    got = kalman_loglik_batch(stacked, mu0, Sigma0, y)
    want = [kalman_filter_numpy(m, a, b, c, jitter=1e-8).loglik
            for m, a, b, c in zip(models, mu0, Sigma0, y)]
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_gradients_per_model_equal_jax_grad_of_each_model_and_finite_differences(rng):
    models, stacked, mu0, Sigma0, y = random_batch(rng, 7, T=10, missing=True)
    stacked = as_jax(stacked)

    def total(models, mu0, Sigma0, y):
        return jnp.sum(kalman_loglik_batch(models, mu0, Sigma0, y))

    grads = jax.jit(jax.grad(total, argnums=(0, 1, 2, 3)))(stacked, mu0, Sigma0, y)
    g_single = jax.jit(jax.grad(lambda *a: kalman_filter(*a).loglik, argnums=(0, 1, 2, 3)))
    for b in range(7):
        want = g_single(as_jax(models[b]), mu0[b], Sigma0[b], y[b])
        assert_trees_close_normwise(jax.tree.map(lambda x: x[b], grads), want, rtol=1e-10,
                                    err_msg=f"model {b}")
    args = (stacked, jnp.asarray(mu0))
    f = lambda models, mu0: total(models, mu0, Sigma0, y)
    for _ in range(2):  # along random directions, against central differences
        d = random_direction(rng, args)
        np.testing.assert_allclose(tree_dot(grads[:2], d),
                                   central_difference(f, args, d, eps=1e-6),
                                   rtol=1e-6, atol=1e-8)


def test_sharded_on_one_device_equals_numpy_reference(rng):
    models, stacked, mu0, Sigma0, y = random_batch(rng, 5)
    want = [kalman_filter_numpy(m, a, b, c, jitter=1e-8).loglik
            for m, a, b, c in zip(models, mu0, Sigma0, y)]
    np.testing.assert_allclose(kalman_loglik_sharded(stacked, mu0, Sigma0, y), want,
                               rtol=1e-10)


SHARDED_ON_TWO_DEVICES = textwrap.dedent("""
    import jax, numpy as np
    import lecture_utils
    from lecture_utils.kalman import kalman_filter_numpy, kalman_loglik_sharded
    from lecture_utils.simulation import LSSModel
    assert jax.device_count() == 2, jax.devices()
    rng = np.random.default_rng(0)
    B, N, M, T = 7, 3, 2, 20  # odd B: the batch is padded to 8, then trimmed
    A = 0.5 * rng.normal(size=(B, N, N)) / np.sqrt(N)
    models = LSSModel(A, rng.normal(size=(B, N, 2)), rng.normal(size=(B, M, N)),
                      np.broadcast_to(np.eye(M), (B, M, M)))
    y = rng.normal(size=(T, M))
    got = kalman_loglik_sharded(models, np.zeros(N), np.eye(N), y)
    assert got.shape == (B,), got.shape
    for b in range(B):
        one = LSSModel(*(m[b] for m in models))
        want = kalman_filter_numpy(one, np.zeros(N), np.eye(N), y, jitter=1e-8).loglik
        np.testing.assert_allclose(got[b], want, rtol=1e-10)
    # The work really is split: XLA compiled one program for two partitions.
    compiled = jax.jit(lambda m: kalman_loglik_sharded(m, np.zeros(N), np.eye(N), y)).lower(
        models).compile()
    assert "num_partitions=2" in compiled.as_text()
    print("devices", jax.device_count(), "ok")
""")


def test_sharded_over_two_cpu_devices_equals_numpy_reference():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    out = subprocess.run([sys.executable, "-c", SHARDED_ON_TWO_DEVICES], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "devices 2 ok" in out.stdout
