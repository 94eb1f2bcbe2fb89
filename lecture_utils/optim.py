"""Minimise a smooth function of a pytree with optax's L-BFGS."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class LBFGSResult(NamedTuple):
    """Outcome of :func:`lbfgs_minimize`.

    Attributes:
        params: the minimiser found (same pytree structure as the input).
        value: () objective at ``params``.
        grad_norm: () Euclidean norm of the gradient at ``params``.
        iterations: () number of L-BFGS steps taken.
    """

    params: Any
    value: jax.Array
    grad_norm: jax.Array
    iterations: jax.Array


def lbfgs_minimize(fun, init_params, *, max_iter: int = 500, tol: float = 1e-10) -> LBFGSResult:
    """Minimise ``fun(params) -> scalar`` with L-BFGS and a zoom line search.

    The loop runs inside ``lax.while_loop``, so the whole optimisation is one
    compiled program. It stops when the gradient norm falls below ``tol`` or
    after ``max_iter`` steps; check ``grad_norm`` to tell which.

    Example:
        >>> import jax.numpy as jnp
        >>> res = lbfgs_minimize(lambda p: jnp.sum((p["a"] - 3.0) ** 2), {"a": jnp.zeros(2)})
        >>> res.params["a"].tolist()
        [3.0, 3.0]
    """
    optimizer = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(fun)

    def step(carry):
        params, state = carry
        value, grad = value_and_grad(params, state=state)
        updates, state = optimizer.update(
            grad, state, params, value=value, grad=grad, value_fn=fun
        )
        return optax.apply_updates(params, updates), state

    def keep_going(carry):
        _, state = carry
        count = optax.tree.get(state, "count")
        grad_norm = optax.tree.norm(optax.tree.get(state, "grad"))
        return (count == 0) | ((count < max_iter) & (grad_norm >= tol))

    @jax.jit
    def run(init_params):
        carry = (init_params, optimizer.init(init_params))
        params, state = jax.lax.while_loop(keep_going, step, carry)
        value, grad = jax.value_and_grad(fun)(params)
        return LBFGSResult(params, value, optax.tree.norm(grad), optax.tree.get(state, "count"))

    return run(jax.tree.map(lambda p: jnp.asarray(p, dtype=jnp.float64), init_params))
