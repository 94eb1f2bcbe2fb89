"""Log-likelihoods of many parameter sets at once, on one device or sharded over all.

``jax.vmap`` of :func:`lecture_utils.kalman.kalman_filter` is correct but puts
the batch axis first: each model's 5x5 matrices sit apart in memory and XLA's
fused loops over them are too short to vectorise. Here the batch axis is moved
*last* (structure of arrays), so that every scalar operation of the unrolled
small-matrix filter runs over B contiguous numbers in SIMD registers. The
arithmetic is the same as the single filter's: the step functions are shared.

:func:`kalman_loglik_sharded` splits the batch over every JAX device with
``jax.shard_map``; each device runs :func:`kalman_loglik_batch` on its slice.
The same call uses all GPUs of a multi-GPU machine, or several CPU devices
made with ``XLA_FLAGS=--xla_force_host_platform_device_count=n``.
"""

from functools import lru_cache, partial

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from lecture_utils.kalman import _linalg as sl
from lecture_utils.kalman._checks import check_batch_inputs
from lecture_utils.kalman._steps import condition_on, predict, symmetrize
from lecture_utils.kalman.sequential import kalman_loglik
from lecture_utils.simulation import LSSModel

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
    A, C, G, H = (jnp.moveaxis(m, 0, -1) for m in models)  # (rows, cols, B)
    Q, R = sl.matmul(C, sl.transpose(C)), sl.matmul(H, sl.transpose(H))
    mu = _batch_last(mu0, mu0.ndim == 2, B)
    Sigma = symmetrize(_batch_last(Sigma0, Sigma0.ndim == 3, B))
    # Time first for the scan; y_t is (M, B) if batched, else (M, 1) and broadcasts.
    y = jnp.moveaxis(y, 0, -1) if y.ndim == 3 else y[..., None]

    def step(carry, y_t):
        """carry = the filtered moments, the log-likelihood so far and success, each per model."""
        mu, Sigma, loglik, ok = carry
        mu_hat, Sigma_hat = predict(mu, Sigma, A, Q)
        u = condition_on(mu_hat, Sigma_hat, y_t, G, R, jitter)
        return (u.mu, u.Sigma, loglik + u.loglik, ok & u.ok), None

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


def kalman_loglik_batch(models: LSSModel, mu0, Sigma0, y, *, jitter: float = 1e-8,
                        chunk: int | None = None):
    """Log-likelihoods of B parameter sets, computed together.

    Args:
        models: ``LSSModel`` whose matrices carry a leading batch axis:
            A (B, N, N), C (B, N, K), G (B, M, N), H (B, M, L).
        mu0: (N,) shared or (B, N) prior means.
        Sigma0: (N, N) shared or (B, N, N) prior covariances.
        y: (T, M) shared observations or (B, T, M), one series per model.
        jitter: as in :func:`lecture_utils.kalman.kalman_filter`.
        chunk: models processed together; default :func:`default_chunk`
            (100 on a CPU, the whole batch on an accelerator).

    Returns:
        (B,) log-likelihoods, equal to ``kalman_filter(...).loglik`` for each
        model, missing entries (NaN in ``y``) included. Where some ``S_t`` of a
        model is not positive definite, its entry is ``-inf`` with a zero
        gradient and the others are unaffected (no error is raised, so that
        one bad point of a grid does not stop the rest). Differentiable, and
        usable under ``jit``.

    Raises:
        ValueError: as the validator of :func:`~lecture_utils.kalman.kalman_filter`:
            wrong shapes, non-finite model or prior, infinite observations, a
            prior covariance that is not positive semi-definite.
    """
    models, mu0, Sigma0, y, (B, N, M) = check_batch_inputs(models, mu0, Sigma0, y)
    if M > sl.MAX_UNROLLED_M:  # the library Cholesky wants the batch axis first
        in_axes = (0, 0 if mu0.ndim == 2 else None, 0 if Sigma0.ndim == 3 else None,
                   0 if y.ndim == 3 else None)
        return jax.vmap(lambda *args: kalman_loglik(*args, jitter=jitter),
                        in_axes=in_axes)(models, mu0, Sigma0, y)
    return _loglik_chunked(models, mu0, Sigma0, y, jitter, default_chunk() if chunk is None else chunk)


def kalman_loglik_sharded(models: LSSModel, mu0, Sigma0, y, *, jitter: float = 1e-8,
                          mesh: jax.sharding.Mesh | None = None):
    """:func:`kalman_loglik_batch` with the batch split over the devices of ``mesh``.

    ``mesh`` defaults to a one-axis mesh over all ``jax.devices()``. B need not
    divide by the device count: the batch is padded with copies of its first
    model, whose results are dropped.

    Returns:
        (B,) log-likelihoods.
    """
    models, mu0, Sigma0, y, _ = check_batch_inputs(models, mu0, Sigma0, y)
    if mesh is None:
        mesh = jax.make_mesh((jax.device_count(),), ("batch",), axis_types=(AxisType.Auto,))
    if len(mesh.axis_names) != 1:
        raise ValueError(f"mesh must have one axis, got {mesh.axis_names}")
    batched = (True, mu0.ndim == 2, Sigma0.ndim == 3, y.ndim == 3)
    return _sharded(mesh, batched)(models, mu0, Sigma0, y, jitter)


@lru_cache
def _sharded(mesh, batched):
    """The jitted, sharded computation for one mesh and pattern of batched arguments."""
    (axis,) = mesh.axis_names
    specs = tuple(PartitionSpec(axis) if b else PartitionSpec() for b in batched)

    def local(models, mu0, Sigma0, y, jitter):
        return kalman_loglik_batch(models, mu0, Sigma0, y, jitter=jitter)

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
