"""The one validator that every Kalman entry point calls, eagerly, before tracing.

Shapes are always checked; values (finiteness, a positive semi-definite prior,
the parallel method's requirement, a valid ``jitter``) only when they are
concrete, since under ``jit``/``grad``/``vmap`` they cannot be inspected. NaN
in ``y`` is allowed: it marks an entry that was not observed.
"""

import jax
import numpy as np

from lecture_utils._validation import as_float64, check_shape, is_concrete
from lecture_utils.lss import LSSModel, check_lss_model

__all__ = ["METHODS", "PSD_RTOL", "check_batch_inputs", "check_inputs", "check_jitter",
           "check_mesh", "check_observations", "check_sigma0"]

# Sigma0 counts as symmetric PSD if its asymmetry and its negative eigenvalues
# are below this fraction of its largest entry (rounding in a rotated prior).
PSD_RTOL = 1e-8
# G CC' G' + HH' counts as singular for the parallel filter below this
# fraction of its largest eigenvalue.
PARALLEL_RTOL = 1e-12
METHODS = ("sequential", "parallel")


def _check_finite(name, x):
    if is_concrete(x) and not np.all(np.isfinite(np.asarray(x))):
        raise ValueError(f"{name} has NaN or infinite entries")


def check_jitter(jitter):
    """Refuse a ``jitter`` that is not a real scalar, or (when concrete) negative or not finite.

    Returns it as a float64 scalar.
    """
    if np.ndim(jitter) != 0:
        raise ValueError(f"jitter must be a scalar, got shape {np.shape(jitter)}")
    jitter = as_float64("jitter", jitter)
    if is_concrete(jitter) and not (np.isfinite(jitter) and jitter >= 0):
        raise ValueError(f"jitter must be finite and >= 0 (a relative addition to the "
                         f"diagonal of S_t), got {float(jitter)}")
    return jitter


def check_sigma0(Sigma0, name="Sigma0"):
    """Refuse a prior covariance (..., N, N) that is not symmetric positive semi-definite."""
    if not is_concrete(Sigma0):
        return
    S = np.asarray(Sigma0)
    tol = PSD_RTOL * np.max(np.abs(S), axis=(-2, -1))
    if np.any(np.max(np.abs(S - np.swapaxes(S, -1, -2)), axis=(-2, -1)) > tol):
        raise ValueError(f"{name} must be symmetric")
    eig = np.linalg.eigvalsh(0.5 * (S + np.swapaxes(S, -1, -2)))
    if np.any(eig.min(axis=-1) < -tol):
        raise ValueError(f"{name} must be positive semi-definite (smallest eigenvalue "
                         f"{eig.min():.3g}, largest {eig.max():.3g})")


def _check_parallel_model(model):
    """Refuse (when concrete) a model whose generic parallel-scan element is undefined.

    Each element conditions ``x_{t+1} ~ N(A x_t, CC')`` on ``y_t`` *before*
    the distribution of ``x_t`` is known, which needs ``G CC' G' + HH'``
    positive definite: every observed series must be moved by the state
    shocks or carry measurement error. The sequential filter needs only the
    ``S_t``, which also include the uncertainty about ``x_t``.
    """
    if not is_concrete(model):
        return
    A, C, G, H = (np.asarray(m) for m in model)
    S = G @ C @ C.T @ G.T + H @ H.T
    eig = np.linalg.eigvalsh(0.5 * (S + S.T))
    if eig.min() <= PARALLEL_RTOL * max(eig.max(), np.finfo(float).tiny):
        raise ValueError(
            "method='parallel' needs G C C' G' + H H' positive definite (each observed "
            "series moved by the state shocks or measured with error); here it is singular "
            f"(eigenvalues {eig.min():.3g} to {eig.max():.3g}). Use method='sequential'.")


def check_observations(y, M, batch_shape=()):
    """``y`` as float64 of shape (*batch, T, M); NaN allowed (missing), inf refused."""
    y = as_float64("y", y)
    check_shape("y", y, tuple(batch_shape) + (None, M))
    if is_concrete(y) and np.any(np.isinf(np.asarray(y))):
        rows = np.flatnonzero(np.any(np.isinf(np.asarray(y)).reshape(-1, M), axis=1))
        raise ValueError(f"y has infinite entries (flattened rows {rows[:10].tolist()}); "
                         "mark an unobserved entry with NaN")
    return y


def check_inputs(model, mu0, Sigma0, y, jitter, method="sequential"):
    """Validate one model, its data and settings; return float64 arrays and (N, M).

    Returns:
        ``(model, mu0, Sigma0, y, jitter, (N, M))``.

    Raises:
        ValueError: naming the argument that has the wrong shape, a NaN or
            infinite entry (model, ``mu0``, ``Sigma0``; infinite ``y``), a
            ``Sigma0`` that is not symmetric positive semi-definite, a
            negative or non-finite ``jitter``, an unknown ``method``, or a
            model the parallel method cannot run.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    model, (N, _, M, _) = check_lss_model(model)
    for name, m in zip("ACGH", model):
        _check_finite(f"model.{name}", m)
    mu0 = as_float64("mu0", mu0)
    check_shape("mu0", mu0, (N,))
    _check_finite("mu0", mu0)
    Sigma0 = as_float64("Sigma0", Sigma0)
    check_shape("Sigma0", Sigma0, (N, N))
    _check_finite("Sigma0", Sigma0)
    check_sigma0(Sigma0)
    y = check_observations(y, M)
    jitter = check_jitter(jitter)
    if method == "parallel" and y.shape[0] > 0:
        _check_parallel_model(model)
    return model, mu0, Sigma0, y, jitter, (N, M)


def check_batch_inputs(models, mu0, Sigma0, y, jitter):
    """Validate B stacked models; ``mu0``, ``Sigma0``, ``y`` shared or per model.

    Returns:
        ``(models, mu0, Sigma0, y, jitter, (B, N, M))``, arrays in float64.
    """
    if not isinstance(models, LSSModel):
        raise ValueError(f"models must be an LSSModel, got {type(models).__name__}")
    A, C, G, H = (as_float64(f"models.{k}", m) for k, m in zip("ACGH", models))
    if A.ndim != 3 or A.shape[1] != A.shape[2]:
        raise ValueError(f"models.A must have shape (B, N, N), got {A.shape}")
    B, N = A.shape[:2]
    check_shape("models.C", C, (B, N, None))
    check_shape("models.G", G, (B, None, N))
    M = G.shape[1]
    check_shape("models.H", H, (B, M, None))
    for name, m in zip("ACGH", (A, C, G, H)):
        _check_finite(f"models.{name}", m)
    mu0, Sigma0 = as_float64("mu0", mu0), as_float64("Sigma0", Sigma0)
    check_shape("mu0", mu0, (B, N) if mu0.ndim == 2 else (N,))
    check_shape("Sigma0", Sigma0, (B, N, N) if Sigma0.ndim == 3 else (N, N))
    _check_finite("mu0", mu0)
    _check_finite("Sigma0", Sigma0)
    check_sigma0(Sigma0)
    y = check_observations(y, M, (B,) if np.ndim(y) == 3 else ())
    return LSSModel(A, C, G, H), mu0, Sigma0, y, check_jitter(jitter), (B, N, M)


def check_mesh(mesh):
    """Refuse a ``jax.sharding.Mesh`` with other than one axis (None passes)."""
    if mesh is not None and (not isinstance(mesh, jax.sharding.Mesh) or len(mesh.axis_names) != 1):
        raise ValueError(f"mesh must be a jax.sharding.Mesh with one axis, got {mesh!r}")
