import jax
import numpy as np
import pytest

import lecture_utils  # noqa: F401  (enables float64)
from lecture_utils.simulation import LSSModel


def random_lss(rng: np.random.Generator, N=3, K=2, M=2, L=2, radius=0.9) -> LSSModel:
    """A random stable LSS model with spectral radius ``radius``."""
    A = rng.normal(size=(N, N))
    A *= radius / np.max(np.abs(np.linalg.eigvals(A)))
    return LSSModel(A, 0.3 * rng.normal(size=(N, K)), rng.normal(size=(M, N)),
                    0.2 * rng.normal(size=(M, L)) + 0.2 * np.eye(M, L))


@pytest.fixture
def rng():
    return np.random.default_rng(20261123)


@pytest.fixture
def key():
    return jax.random.key(20261123)
