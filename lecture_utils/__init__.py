"""Helpers for *Differentiable Economics with JAX*.

Importing the package turns on float64 in JAX (``jax_enable_x64``): every
derivative in the lectures is checked against finite differences and closed
forms, which needs double precision.
"""

import jax

jax.config.update("jax_enable_x64", True)

from lecture_utils.simulation import LSSModel, simulate_lss, simulate_ssm  # noqa: E402

__all__ = ["LSSModel", "simulate_lss", "simulate_ssm"]
