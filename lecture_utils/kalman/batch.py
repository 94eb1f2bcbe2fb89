"""Log-likelihoods of many parameter sets at once, on one device or sharded over all.

A backend: :func:`loglik_batch` and :func:`loglik_sharded` take inputs checked
by the public :func:`~lecture_utils.kalman.kalman_loglik_batch` and
:func:`~lecture_utils.kalman.kalman_loglik_sharded`, and never call a public
entry point. ``jax.vmap`` of :func:`lecture_utils.kalman.kalman_filter` is correct but puts
the batch axis first: each model's 5x5 matrices sit apart in memory and XLA's
fused loops over them are too short to vectorise. Here the batch axis is moved
*last* (structure of arrays), so that every scalar operation of the unrolled
small-matrix filter runs over B contiguous numbers in SIMD registers. The
arithmetic is the same as the single filter's: the step functions are shared.

:func:`loglik_sharded` splits the batch over every JAX device with
``jax.shard_map``; each device runs :func:`loglik_batch` on its slice.
The same call uses all GPUs of a multi-GPU machine, or several CPU devices
made with ``XLA_FLAGS=--xla_force_host_platform_device_count=n``.
"""

from functools import lru_cache, partial

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from lecture_utils.kalman import _linalg as sl
from lecture_utils.kalman import sequential
from lecture_utils.kalman._steps import condition_on, noise_covariances, predict

__all__ = ["CPU_CHUNK", "default_chunk", "loglik_batch", "loglik_sharded"]

CPU_CHUNK = 100  # models per chunk on a CPU; measured on a 2-core x86 machine at N = 2 and 5


def default_chunk() -> int | None:
    """Models per chunk for the default backend: CPU_CHUNK on a CPU, no chunking elsewhere.

    On a CPU a chunk's working set stays in cache; an accelerator wants the
    whole batch at once.
    """
    return CPU_CHUNK if jax.default_backend() == "cpu" else None


def _pad(args, batched, multiple):
    """Pad the batched ones of ``args`` to a multiple of ``multiple`` by repeating model 0."""
    def pad(x):
        extra = -x.shape[0] % multiple
        return jnp.concatenate([x, jnp.broadcast_to(x[:1], (extra,) + x.shape[1:])])

    return [jax.tree.map(pad, a) if b else a for a, b in zip(args, batched)]


def _batch_last(x, batched, B):
    """Move the leading batch axis to the end, or broadcast a shared array to B."""
    return jnp.moveaxis(x, 0, -1) if batched else jnp.broadcast_to(x[..., None], x.shape + (B,))


def _loglik_batch_last(models, mu0, Sigma0, y, jitter):
    B = models.A.shape[0]
    A, C, G, H = batch_last = jax.tree.map(lambda m: jnp.moveaxis(m, 0, -1), models)  # (n, k, B)
    Q, R = noise_covariances(batch_last)
    mu = _batch_last(mu0, mu0.ndim == 2, B)
    Sigma = sl.symmetrize(_batch_last(Sigma0, Sigma0.ndim == 3, B))
    # Time first for the scan; y_t is (M, B) if batched, else (M, 1) and broadcasts.
    y = jnp.moveaxis(y, 0, -1) if y.ndim == 3 else y[..., None]

    def step(carry, y_t):
        """carry = the filtered moments, the log-likelihood so far and success, each per model.

        A model whose step fails keeps its last moments (as in the sequential filter).
        """
        mu, Sigma, loglik, ok = carry
        mu_hat, Sigma_hat = predict(mu, Sigma, A, Q)
        u = condition_on(mu_hat, Sigma_hat, y_t, G, R, jitter)
        ok = ok & u.ok
        return (jnp.where(ok, u.mu, mu), jnp.where(ok, u.Sigma, Sigma), loglik + u.loglik, ok), None

    init = (mu, Sigma, jnp.zeros(B), jnp.ones(B, dtype=bool))
    (_, _, loglik, ok), _ = lax.scan(step, init, y)
    return jnp.where(ok, loglik, -jnp.inf)


@partial(jax.jit, static_argnames="chunk")
def _loglik_chunked(models, mu0, Sigma0, y, jitter, chunk):
    """Run the batch in chunks of ``chunk`` models, one after the other.

    A chunk's working set (a few dozen (N, N, chunk) arrays) stays in cache;
    one pass over 1,000 models at once was 25-30% slower at N = 5 on a CPU.
    """
    B = models.A.shape[0]
    if chunk is None or B <= chunk:
        return _loglik_batch_last(models, mu0, Sigma0, y, jitter)
    batched = (True, mu0.ndim == 2, Sigma0.ndim == 3, y.ndim == 3)
    args = _pad((models, mu0, Sigma0, y), batched, chunk)
    chunks = [jax.tree.map(lambda a: a.reshape((-1, chunk) + a.shape[1:]), a) if b else None
              for a, b in zip(args, batched)]

    def one_chunk(chunk):
        return _loglik_batch_last(*(c if b else a for a, b, c in zip(args, batched, chunk)),
                                  jitter)

    return lax.map(one_chunk, chunks).reshape(-1)[:B]


def loglik_batch(models, mu0, Sigma0, y, jitter, chunk=None):
    """(B,) log-likelihoods of checked, stacked inputs; ``chunk`` None means :func:`default_chunk`.

    See :func:`~lecture_utils.kalman.kalman_loglik_batch` for the arguments.
    ``jitter`` is a numerical setting: its derivative is zero.
    """
    jitter = jax.lax.stop_gradient(jitter)
    if models.G.shape[1] > sl.MAX_UNROLLED_M:  # the library Cholesky wants the batch axis first
        in_axes = (0, 0 if mu0.ndim == 2 else None, 0 if Sigma0.ndim == 3 else None,
                   0 if y.ndim == 3 else None, None)
        return jax.vmap(sequential.loglik, in_axes=in_axes)(models, mu0, Sigma0, y, jitter)
    return _loglik_chunked(models, mu0, Sigma0, y, jitter, default_chunk() if chunk is None else chunk)


def loglik_sharded(models, mu0, Sigma0, y, jitter, mesh=None):
    """:func:`loglik_batch` with the batch split over the devices of ``mesh`` (checked inputs).

    ``mesh`` has one axis; None means one over all ``jax.devices()``. B need
    not divide by the device count: the batch is padded with copies of its
    first model, whose results are dropped.
    """
    if mesh is None:
        mesh = jax.make_mesh((jax.device_count(),), ("batch",), axis_types=(AxisType.Auto,))
    batched = (True, mu0.ndim == 2, Sigma0.ndim == 3, y.ndim == 3)
    return _sharded(mesh, batched)(models, mu0, Sigma0, y, jitter)


@lru_cache
def _sharded(mesh, batched):
    """The jitted, sharded computation for one mesh and pattern of batched arguments."""
    (axis,) = mesh.axis_names
    specs = tuple(PartitionSpec(axis) if b else PartitionSpec() for b in batched)

    def local(models, mu0, Sigma0, y, jitter):
        return loglik_batch(models, mu0, Sigma0, y, jitter)

    # check_vma=False: every device's computation is independent and the scan
    # carries mix shared (replicated) and per-device values by design.
    run = jax.shard_map(local, mesh=mesh, in_specs=specs + (PartitionSpec(),),
                        out_specs=PartitionSpec(axis), check_vma=False)

    @jax.jit
    def padded_run(models, mu0, Sigma0, y, jitter):
        B = models.A.shape[0]
        args = _pad((models, mu0, Sigma0, y), batched, mesh.size)
        args = [jax.lax.with_sharding_constraint(a, NamedSharding(mesh, spec))
                for a, spec in zip(args, specs)]
        return run(*args, jitter)[:B]

    return padded_run
