"""Eager input checks, run before tracing so that errors name the argument."""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["as_float64", "check_shape", "is_concrete"]


def as_float64(name: str, x) -> jax.Array:
    """Return ``x`` as a float64 JAX array.

    Integers and lower-precision floats are promoted (no information is lost);
    complex, boolean and non-numeric input is refused.
    """
    if x is None:
        raise ValueError(f"{name} is required, got None")
    dtype = x.dtype if isinstance(x, jax.Array) else np.asarray(x).dtype
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raise ValueError(f"{name} must be real, got dtype {dtype}")
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
        raise ValueError(f"{name} must be a real numeric array, got dtype {dtype}")
    if not jax.config.jax_enable_x64:
        raise RuntimeError(
            "lecture_utils needs float64: call "
            "jax.config.update('jax_enable_x64', True) before creating arrays"
        )
    return jnp.asarray(x, dtype=jnp.float64)


def check_shape(name: str, x, expected: Sequence[int | None]) -> None:
    """Raise ``ValueError`` unless ``x.shape`` matches ``expected`` (None = any)."""
    shape = tuple(np.shape(x))
    ok = len(shape) == len(expected) and all(
        e is None or e == s for e, s in zip(expected, shape)
    )
    if not ok:
        want = "(" + ", ".join("?" if e is None else str(e) for e in expected)
        want += ",)" if len(expected) == 1 else ")"
        raise ValueError(f"{name} must have shape {want}, got {shape}")


def is_concrete(*xs) -> bool:
    """True when no argument is a tracer, so values can be inspected eagerly."""
    leaves = jax.tree_util.tree_leaves(xs)
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in leaves)
