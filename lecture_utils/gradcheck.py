"""Finite-difference checks of forward- and reverse-mode derivatives.

These complement ``jax.test_util.check_grads`` with checks a reader can
follow line by line: a central difference along a direction, compared with
``jax.jvp`` (forward mode) and with ``jax.vjp`` through the dot-product
identity ``<u, J t> = <J^T u, t>`` (reverse mode).
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

__all__ = ["assert_trees_allclose", "assert_trees_close_normwise", "central_difference",
           "check_jvp", "check_vjp", "random_like", "tree_dot"]


def tree_dot(a, b) -> jax.Array:
    """Sum of elementwise products over two pytrees of the same structure."""
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def random_like(key: jax.Array, tree):
    """A standard-normal pytree with the shapes of ``tree`` (float64)."""
    flat, unravel = ravel_pytree(tree)
    return unravel(jax.random.normal(key, flat.shape, dtype=jnp.float64))


def central_difference(f, primals: tuple, tangents: tuple, eps: float = 1e-6):
    """``(f(p + eps t) - f(p - eps t)) / (2 eps)``, for pytree inputs and outputs."""
    def shifted(sign):
        args = jax.tree.map(lambda p, t: p + sign * eps * t, primals, tangents)
        return f(*args)

    return jax.tree.map(lambda a, b: (a - b) / (2 * eps), shifted(1.0), shifted(-1.0))


def assert_trees_allclose(actual, desired, *, rtol=1e-7, atol=0.0, err_msg=""):
    """``np.testing.assert_allclose`` leaf by leaf over two pytrees."""
    a_leaves, a_def = jax.tree.flatten(actual)
    d_leaves, d_def = jax.tree.flatten(desired)
    if a_def != d_def:
        raise AssertionError(f"tree structures differ: {a_def} vs {d_def}")
    for i, (a, d) in enumerate(zip(a_leaves, d_leaves)):
        np.testing.assert_allclose(a, d, rtol=rtol, atol=atol, err_msg=f"{err_msg} leaf {i}")


def assert_trees_close_normwise(actual, desired, rtol, err_msg=""):
    """Leaf by leaf, ``||actual - desired|| <= rtol * ||desired||`` (Frobenius norms).

    Norm-wise, because an elementwise relative test is meaningless for entries
    that are zero up to rounding, while an absolute one depends on the scale.
    Also requires both to be finite.
    """
    a_leaves, a_def = jax.tree.flatten(actual)
    d_leaves, d_def = jax.tree.flatten(desired)
    if a_def != d_def:
        raise AssertionError(f"tree structures differ: {a_def} vs {d_def}")
    for i, (a, d) in enumerate(zip(a_leaves, d_leaves)):
        a, d = np.asarray(a), np.asarray(d)
        if a.shape != d.shape:
            raise AssertionError(f"{err_msg} leaf {i}: shapes {a.shape} vs {d.shape}")
        if not (np.all(np.isfinite(a)) and np.all(np.isfinite(d))):
            raise AssertionError(f"{err_msg} leaf {i}: non-finite entries")
        err, scale = np.linalg.norm(a - d), np.linalg.norm(d)
        if not (err <= rtol * scale or err == 0.0):
            raise AssertionError(f"{err_msg} leaf {i}: ||diff|| = {err:.3e} > {rtol:.0e} * "
                                 f"||ref|| = {rtol * scale:.3e}")


def check_jvp(f, primals: tuple, tangents: tuple, *, eps=1e-6, rtol=1e-6, atol=1e-9):
    """Assert that ``jax.jvp`` of ``f`` equals a central difference along ``tangents``.

    Returns the forward-mode tangent of the output, so a caller can reuse it.

    Example:
        >>> import jax.numpy as jnp
        >>> _ = check_jvp(jnp.sin, (jnp.array(0.3),), (jnp.array(1.0),))
    """
    _, tangent_out = jax.jvp(f, primals, tangents)
    assert_trees_allclose(
        tangent_out, central_difference(f, primals, tangents, eps),
        rtol=rtol, atol=atol, err_msg="jvp vs central difference:",
    )
    return tangent_out


def check_vjp(f, primals: tuple, *, key, eps=1e-6, rtol=1e-6, atol=1e-9):
    """Assert reverse mode against forward mode and finite differences.

    Draws a random input direction ``t`` and output cotangent ``u`` from
    ``key`` and checks ``<u, J t>`` three ways: ``<vjp(u), t>`` (reverse),
    ``<u, jvp(t)>`` (forward) and ``<u, central difference along t>``.
    """
    k_in, k_out = jax.random.split(key)
    tangents = random_like(k_in, primals)
    out, vjp_fn = jax.vjp(f, *primals)
    cotangent = random_like(k_out, out)
    reverse = tree_dot(vjp_fn(cotangent), tangents)
    forward = tree_dot(cotangent, jax.jvp(f, primals, tangents)[1])
    finite = tree_dot(cotangent, central_difference(f, primals, tangents, eps))
    np.testing.assert_allclose(reverse, forward, rtol=1e-10, atol=1e-12,
                               err_msg="dot-product test <u, J t> = <J^T u, t>")
    np.testing.assert_allclose(reverse, finite, rtol=rtol, atol=atol,
                               err_msg="reverse mode vs central difference")
    return reverse
