"""Helpers for *Differentiable Economics with JAX*.

Importing the package turns on float64 in JAX (``jax_enable_x64``): every
derivative in the lectures is checked against finite differences and closed
forms, which needs double precision. It also turns on JAX's persistent
compilation cache (see :mod:`lecture_utils.compile_cache`; off with
``LECTURE_UTILS_NO_CACHE=1``), so that a program compiled once, in a test run,
a book build or a notebook, is not compiled again in the next process. And,
before JAX starts its backend, it applies the XLA:CPU settings under which a
filter's loop runs as one native kernel (see :mod:`lecture_utils.xla_settings`;
off with ``LECTURE_UTILS_NO_XLA_TUNING=1``).
"""

import jax

from lecture_utils.xla_settings import apply_xla_settings

apply_xla_settings()  # before anything starts JAX's backend
jax.config.update("jax_enable_x64", True)

from lecture_utils.compile_cache import enable_persistent_cache  # noqa: E402

enable_persistent_cache()

from lecture_utils.lss import LSSModel  # noqa: E402
from lecture_utils.simulation import simulate_lss, simulate_ssm  # noqa: E402

__all__ = ["LSSModel", "simulate_lss", "simulate_ssm"]
