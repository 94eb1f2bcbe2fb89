"""Random problems for the tests (models, data, gaps, directions), and the benchmark
scripts as modules.

The references the tests compare against (the NumPy filter, the dense joint
Gaussian, statsmodels) live in :mod:`lecture_utils.kalman.reference`, and the
gradient checks in :mod:`lecture_utils.gradcheck`, where the benchmarks and the
lectures import them too.
"""

import importlib.util
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from lecture_utils.simulation import LSSModel

# ----- random problems ---------------------------------------------------------------


def random_lss(rng: np.random.Generator, N=3, K=2, M=2, L=2, radius=0.9) -> LSSModel:
    """A random stable LSS model with spectral radius ``radius``."""
    A = rng.normal(size=(N, N))
    A *= radius / np.max(np.abs(np.linalg.eigvals(A)))
    return LSSModel(A, 0.3 * rng.normal(size=(N, K)), rng.normal(size=(M, N)),
                    0.2 * rng.normal(size=(M, L)) + 0.2 * np.eye(M, L))


def simulate_data(rng, model, T, mu0, Sigma0):
    """Observations y (T, M) of x_1..x_T with x_0 ~ N(mu0, Sigma0), by a NumPy loop."""
    A, C, G, H = (np.asarray(m) for m in model)
    x = rng.multivariate_normal(np.asarray(mu0, float), np.asarray(Sigma0, float))
    y = np.empty((T, G.shape[0]))
    for t in range(T):
        x = A @ x + C @ rng.normal(size=C.shape[1])
        y[t] = G @ x + H @ rng.normal(size=H.shape[1])
    return y


def with_missing(rng, y, frac=0.25, nan_rows=(), nan_col_rows=()):
    """A copy of ``y`` with a random ``frac`` of entries NaN, whole rows ``nan_rows``
    NaN, and column 0 NaN in ``nan_col_rows``."""
    y = np.array(y, dtype=float)
    y[rng.uniform(size=y.shape) < frac] = np.nan
    y[list(nan_rows)] = np.nan
    y[list(nan_col_rows), 0] = np.nan
    return y


def random_rotation(rng, n):
    Q, R = np.linalg.qr(rng.normal(size=(n, n)))
    return Q * np.sign(np.diag(R))


def stack_models(models):
    return LSSModel(*(np.stack(m) for m in zip(*models)))


def as_jax(model):
    return LSSModel(*(jnp.asarray(m) for m in model))


# ----- random directions ---------------------------------------------------------------


def random_direction(rng, tree):
    """A standard normal pytree shaped like ``tree`` (NumPy, float64)."""
    return jax.tree.map(lambda x: jnp.asarray(rng.normal(size=np.shape(x))), tree)


# ----- named tolerances ------------------------------------------------------------------

#: Two paths through the same step functions (kalman_loglik against kalman_filter's loglik).
SAME_STEPS_RTOL = 1e-12
#: The JAX filters against an independent implementation (NumPy solve and slogdet, dense).
INDEPENDENT_RTOL = 1e-9
#: The hand-derived reverse rule against autodiff of the filter, norm-wise per input.
ADJOINT_RTOL = 1e-10


def accumulated(rtol, T, calibrated_T=10_000):
    """``rtol`` for a quantity summed or propagated over T steps.

    The named tolerances hold up to ``calibrated_T`` steps (the longest series
    the tests run); beyond it independent rounding errors grow like sqrt(T).
    """
    return rtol * max(1.0, float(np.sqrt(T / calibrated_T)))


# ----- the benchmark scripts -------------------------------------------------------------

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str):
    """``benchmarks/<name>.py`` as a module (its ``main`` not run), with the folder on
    ``sys.path`` for the scripts' ``from common import ...``."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
