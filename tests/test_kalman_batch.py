"""The batched and sharded log-likelihoods equal the single filter, model by model."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import random_lss
from jax.test_util import check_grads

from lecture_utils.kalman import kalman_filter, kalman_filter_numpy
from lecture_utils.kalman.batch import CHUNK, kalman_loglik_batch, kalman_loglik_sharded
from lecture_utils.simulation import LSSModel


def random_batch(rng, B, N=3, M=2, T=25):
    """B random models (stacked), per-model priors and per-model data."""
    models = [random_lss(rng, N=N, K=2, M=M, L=M) for _ in range(B)]
    stacked = LSSModel(*(np.stack(m) for m in zip(*models)))
    mu0 = rng.normal(size=(B, N))
    Sigma0 = np.stack([np.eye(N) * s for s in rng.uniform(0.5, 2.0, size=B)])
    y = rng.normal(size=(B, T, M))
    return models, stacked, mu0, Sigma0, y


def one_by_one(models, mu0, Sigma0, y, jitter=1e-8):
    return np.array([kalman_filter(m, a, b, c, jitter=jitter).loglik
                     for m, a, b, c in zip(models, mu0, Sigma0, y)])


@pytest.mark.parametrize("B", [1, 7, CHUNK + 30])  # one chunk, and chunks with padding
def test_batch_equals_single_filter_per_model(rng, B):
    models, stacked, mu0, Sigma0, y = random_batch(rng, B)
    np.testing.assert_allclose(kalman_loglik_batch(stacked, mu0, Sigma0, y),
                               one_by_one(models, mu0, Sigma0, y), rtol=1e-12)
    # And the independent NumPy filter, for a few of them.
    for b in (0, B - 1):
        ref = kalman_filter_numpy(models[b], mu0[b], Sigma0[b], y[b])[0]
        np.testing.assert_allclose(kalman_loglik_batch(stacked, mu0, Sigma0, y)[b], ref,
                                   rtol=1e-10)


def test_shared_prior_and_data_broadcast(rng):
    models, stacked, mu0, Sigma0, y = random_batch(rng, 5)
    got = kalman_loglik_batch(stacked, mu0[0], Sigma0[0], y[0])
    want = one_by_one(models, [mu0[0]] * 5, [Sigma0[0]] * 5, [y[0]] * 5)
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_many_observables_fall_back_to_vmap(rng):
    models, stacked, mu0, Sigma0, y = random_batch(rng, 3, N=4, M=8)
    np.testing.assert_allclose(kalman_loglik_batch(stacked, mu0, Sigma0, y),
                               one_by_one(models, mu0, Sigma0, y), rtol=1e-12)


def test_gradient_against_finite_differences(rng):
    _, stacked, mu0, Sigma0, y = random_batch(rng, 3, T=6)
    stacked = LSSModel(*map(jnp.asarray, stacked))

    def total(models, mu0):
        return jnp.sum(kalman_loglik_batch(models, mu0, Sigma0, y))

    check_grads(total, (stacked, jnp.asarray(mu0)), order=1, modes=["fwd", "rev"])


def test_bad_model_gives_minus_inf_and_leaves_the_others(rng):
    models, stacked, mu0, Sigma0, y = random_batch(rng, 4)
    H = np.array(stacked.H)
    H[2] = 0.0  # no measurement noise and a rank-one G: S_t is singular for model 2
    G = np.array(stacked.G)
    G[2] = np.outer(np.ones(2), G[2][0])
    got = kalman_loglik_batch(stacked._replace(G=G, H=H), mu0, Sigma0, y, jitter=0.0)
    assert got[2] == -np.inf
    keep = [0, 1, 3]
    want = one_by_one(models, mu0, Sigma0, y, jitter=0.0)
    np.testing.assert_allclose(np.asarray(got)[keep], want[keep], rtol=1e-12)


@pytest.mark.parametrize("arg,value,message", [
    ("models", "A", r"models.A must have shape \(B, N, N\), got \(3, 3\)"),
    ("mu0", np.zeros((2, 3)), r"mu0 must have shape \(4, 3\), got \(2, 3\)"),
    ("Sigma0", np.eye(2), r"Sigma0 must have shape \(3, 3\), got \(2, 2\)"),
    ("y", np.zeros((4, 10, 3)), r"y must have shape \(4, \?, 2\), got \(4, 10, 3\)"),
])
def test_bad_shapes(rng, arg, value, message):
    _, stacked, mu0, Sigma0, y = random_batch(rng, 4)
    args = {"models": stacked, "mu0": mu0, "Sigma0": Sigma0, "y": y}
    args[arg] = stacked._replace(A=stacked.A[0]) if arg == "models" else value
    with pytest.raises(ValueError, match=message):
        kalman_loglik_batch(**args)
    with pytest.raises(ValueError, match=message):
        kalman_loglik_sharded(**args)


def test_nan_observations_are_refused(rng):
    _, stacked, mu0, Sigma0, y = random_batch(rng, 2)
    y[1, 3, 0] = np.nan
    with pytest.raises(ValueError, match="y has NaN"):
        kalman_loglik_batch(stacked, mu0, Sigma0, y)


def test_sharded_on_one_device_equals_batch(rng):
    _, stacked, mu0, Sigma0, y = random_batch(rng, 5)
    np.testing.assert_allclose(kalman_loglik_sharded(stacked, mu0, Sigma0, y),
                               kalman_loglik_batch(stacked, mu0, Sigma0, y), rtol=1e-13)


SHARDED_ON_TWO_DEVICES = textwrap.dedent("""
    import jax, numpy as np
    import lecture_utils
    from lecture_utils.kalman import kalman_loglik_batch, kalman_loglik_sharded
    from lecture_utils.simulation import LSSModel
    assert jax.device_count() == 2, jax.devices()
    rng = np.random.default_rng(0)
    B, N, M, T = 7, 3, 2, 20  # odd B: the batch is padded to 8, then trimmed
    A = 0.5 * rng.normal(size=(B, N, N)) / np.sqrt(N)
    models = LSSModel(A, rng.normal(size=(B, N, 2)), rng.normal(size=(B, M, N)),
                      np.broadcast_to(np.eye(M), (B, M, M)))
    y = rng.normal(size=(T, M))
    got = kalman_loglik_sharded(models, np.zeros(N), np.eye(N), y)
    want = kalman_loglik_batch(models, np.zeros(N), np.eye(N), y)
    assert got.shape == (B,), got.shape
    np.testing.assert_allclose(got, want, rtol=1e-13)
    # The work really is split: XLA compiled one program for two partitions.
    compiled = jax.jit(lambda m: kalman_loglik_sharded(m, np.zeros(N), np.eye(N), y)).lower(
        models).compile()
    assert "num_partitions=2" in compiled.as_text()
    print("devices", jax.device_count(), "ok")
""")


def test_sharded_over_two_cpu_devices_equals_batch():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    out = subprocess.run([sys.executable, "-c", SHARDED_ON_TWO_DEVICES], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "devices 2 ok" in out.stdout
