"""Fixtures shared by the tests. Shared helper *functions* live in ``helpers.py``
(``from helpers import ...``): pytest puts this folder on ``sys.path``, and a
conftest is not meant to be imported."""

import jax
import numpy as np
import pytest

import lecture_utils  # noqa: F401  (enables float64)


@pytest.fixture
def rng():
    return np.random.default_rng(20261123)


@pytest.fixture
def key():
    return jax.random.key(20261123)
