"""Minimise a smooth function of a pytree with L-BFGS: one compiled gradient, a Python loop.

Only ``jax.value_and_grad(fun)`` is compiled, once per objective and shape of
the parameters; the L-BFGS two-loop recursion and the line search run in NumPy
on the flattened parameters. An optimiser written inside ``lax.while_loop``
compiles into one program, but that program contains the objective several
times (its gradient, and the line search's own evaluations), and for an
objective such as a Kalman filter compiling it costs far more than the few
dozen iterations it then saves a Python round trip on (measured in
benchmarks/bench_mle.py).
"""

from collections import deque
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["LBFGSResult", "Status", "lbfgs_minimize"]

MEMORY = 10  # curvature pairs kept
C1, C2 = 1e-4, 0.9  # strong Wolfe constants (sufficient decrease, curvature)
# A decrease this small relative to |f| is within rounding: accept the step on
# the curvature condition alone (the "approximate Wolfe" test of Hager and
# Zhang), so that tight gradient tolerances stay reachable.
ROUNDING_RTOL = 1e-12
MAX_LINE_SEARCH_EVALS = 30
STALL_STEPS = 10  # steps in a row without a new lowest f or |g|: stop, "stalled"

# Compiler options that halve XLA:CPU compile time of a filter's gradient at
# equal run time (the older, per-op code emitters; measured in
# benchmarks/bench_mle.py). Only passed on CPU, and dropped if this XLA does
# not know the option.
CPU_COMPILER_OPTIONS = {"xla_cpu_use_fusion_emitters": False}


Status = Literal["converged", "max_iter", "line_search_failed", "stalled"]


class LBFGSResult(NamedTuple):
    """Outcome of :func:`lbfgs_minimize`.

    Attributes:
        params: the minimiser found (same pytree structure as the input).
        value: () objective at ``params``.
        grad_norm: () Euclidean norm of the gradient at ``params``.
        iterations: () number of L-BFGS steps taken.
        status: why it stopped (a :data:`Status`), one of

            - ``"converged"``: ``grad_norm <= tol``.
            - ``"max_iter"``: ``max_iter`` steps taken, ``grad_norm > tol``.
            - ``"line_search_failed"``: ``grad_norm > tol``, and the line
              search found no acceptable step along the L-BFGS direction nor
              along steepest descent. Typically the search is stuck: at a
              kink, or at the edge of the region where ``fun`` and its
              gradient are finite.
            - ``"stalled"``: ``grad_norm > tol``, and the last
              ``STALL_STEPS`` steps were accepted but lowered neither ``fun``
              nor the gradient norm below the lowest seen: ``params`` is as
              good as rounding allows (``tol`` is below what float64
              resolves for this ``fun``).

            Only ``"converged"`` means ``tol`` was met; in the last two cases
            ``grad_norm`` tells how close to stationary ``params`` is.
    """

    params: Any
    value: jax.Array
    grad_norm: jax.Array
    iterations: jax.Array
    status: Status

    @property
    def converged(self) -> bool:
        """True if the gradient norm reached ``tol`` (``status == "converged"``)."""
        return self.status == "converged"


def _unflatten(structure, x):
    treedef, shapes = structure
    sizes = [int(np.prod(s)) for s in shapes]
    parts = jnp.split(x, np.cumsum(sizes)[:-1]) if len(sizes) > 1 else [x]
    return jax.tree.unflatten(treedef, [p.reshape(s) for p, s in zip(parts, shapes)])


def _value_and_flat_grad(fun, structure, x):
    """``fun`` and its gradient at the flat parameter vector ``x``."""
    value, grad = jax.value_and_grad(fun)(_unflatten(structure, x))
    flat = [jnp.ravel(g) for g in jax.tree.leaves(grad)]
    return value, jnp.concatenate(flat) if len(flat) > 1 else flat[0]


# jit's own cache, keyed on the static (fun, structure), makes a second call
# with the same objective and shapes reuse the compiled program.
_plain = jax.jit(_value_and_flat_grad, static_argnums=(0, 1))
_cpu = jax.jit(_value_and_flat_grad, static_argnums=(0, 1), compiler_options=CPU_COMPILER_OPTIONS)
_use_cpu_options = True


def _compiled_value_and_grad(fun, structure, x):
    global _use_cpu_options
    if _use_cpu_options and jax.default_backend() == "cpu":
        try:
            return _cpu(fun, structure, x)
        except Exception as error:  # an XLA without this option
            if "compile option" not in str(error):
                raise
            _use_cpu_options = False
    return _plain(fun, structure, x)


def _two_loop(g, pairs):
    """L-BFGS direction ``-H g`` from the stored (s, y, 1 / y's) pairs."""
    q = g.copy()
    alphas = []
    for s, y, rho in reversed(pairs):
        a = rho * (s @ q)
        q -= a * y
        alphas.append(a)
    if pairs:
        s, y, _ = pairs[-1]
        q *= (s @ y) / (y @ y)
    for (s, y, rho), a in zip(pairs, reversed(alphas)):
        q += (a - rho * (y @ q)) * s
    return -q


def _cubic_min(a_lo, f_lo, d_lo, a_hi, f_hi, d_hi):
    """Minimiser of the cubic through two points with slopes, or the midpoint."""
    mid = 0.5 * (a_lo + a_hi)
    if not np.isfinite(f_hi):
        return mid
    d1 = d_lo + d_hi - 3.0 * (f_lo - f_hi) / (a_lo - a_hi)
    disc = d1 * d1 - d_lo * d_hi
    if disc < 0:
        return mid
    d2 = np.sign(a_hi - a_lo) * np.sqrt(disc)
    denom = d_hi - d_lo + 2.0 * d2
    a = a_hi - (a_hi - a_lo) * (d_hi + d2 - d1) / denom if denom != 0 else mid
    lo, hi = sorted((a_lo, a_hi))
    margin = 0.1 * (hi - lo)
    return a if np.isfinite(a) and lo + margin <= a <= hi - margin else mid


def _line_search(evaluate, x, f0, g0, p, alpha):
    """A step length satisfying the strong Wolfe conditions (Nocedal and Wright, Alg. 3.5-3.6).

    Returns ``(alpha, x_new, f_new, g_new, evaluations)``; ``alpha`` is None if
    no acceptable step was found. A point where the value or any entry of the
    gradient is not finite counts as too far, so an accepted point has both
    finite.
    """
    d0 = g0 @ p
    slack = ROUNDING_RTOL * abs(f0)
    evals = 0

    def phi(a):
        nonlocal evals
        evals += 1
        x_a = x + a * p
        f_a, g_a = evaluate(x_a)
        if not (np.isfinite(f_a) and np.all(np.isfinite(g_a))):
            return np.inf, np.nan, x_a, g_a
        return f_a, g_a @ p, x_a, g_a

    def decreases(a, f_a):
        return np.isfinite(f_a) and f_a <= f0 + C1 * a * d0 + slack

    def zoom(lo, hi):  # each is (a, f, d); lo satisfies sufficient decrease
        while evals < MAX_LINE_SEARCH_EVALS:
            a = _cubic_min(*lo, *hi)
            f_a, d_a, x_a, g_a = phi(a)
            if not decreases(a, f_a) or f_a >= lo[1] + slack:
                hi = (a, f_a, d_a)
            else:
                if abs(d_a) <= -C2 * d0:
                    return a, x_a, f_a, g_a
                if d_a * (hi[0] - lo[0]) >= 0:
                    hi = lo
                lo = (a, f_a, d_a)
        return None

    prev = (0.0, f0, d0)
    while evals < MAX_LINE_SEARCH_EVALS:
        f_a, d_a, x_a, g_a = phi(alpha)
        if not decreases(alpha, f_a) or (prev[0] > 0 and f_a >= prev[1] + slack):
            found = zoom(prev, (alpha, f_a, d_a))
            break
        if abs(d_a) <= -C2 * d0:
            found = alpha, x_a, f_a, g_a
            break
        if d_a >= 0:
            found = zoom((alpha, f_a, d_a), prev)
            break
        prev, alpha = (alpha, f_a, d_a), 2.0 * alpha
    else:
        found = None
    if found is None:
        return None, x, f0, g0, evals
    return (*found, evals)


def lbfgs_minimize(fun, init_params, *, max_iter: int = 500, tol: float = 1e-10) -> LBFGSResult:
    """Minimise ``fun(params) -> scalar`` with L-BFGS and a strong Wolfe line search.

    ``jax.value_and_grad(fun)`` is compiled once (and reused when called again
    with the same ``fun`` and parameter shapes); the iterations run in NumPy.
    ``fun`` should be a pure function of ``params`` (like anything ``jax.jit``
    compiles).

    It stops, and ``status`` says why (see :class:`LBFGSResult`), when the
    gradient norm is at most ``tol`` (``"converged"``), after ``max_iter``
    steps (``"max_iter"``), when the line search finds no acceptable step
    even along steepest descent (``"line_search_failed"``; after a failure
    along the L-BFGS direction the curvature memory is dropped and steepest
    descent tried first), or when no progress is made any more
    (``"stalled"``). Near a minimum a decrease of ``fun`` can be lost to
    rounding, so the line search accepts a step whose change of ``fun`` is
    within rounding if the slope condition holds; such a step is progress if
    it takes the gradient norm below the lowest seen so far, and
    ``STALL_STEPS`` steps in a row that set no new lowest ``fun`` or gradient
    norm end the run.

    A point where ``fun`` or its gradient is not finite counts as infeasible:
    the line search backs off from it and never accepts it, so every iterate,
    and the result, has a finite value and gradient (there is no
    "non-finite" status). At ``init_params`` there is nothing to back off to,
    so a non-finite value or gradient there raises ``ValueError``.

    Args:
        fun: ``params -> ()`` scalar objective, differentiable by JAX.
        init_params: starting point, a pytree of float arrays.
        max_iter: most L-BFGS steps to take (>= 0).
        tol: stop once the Euclidean norm of the gradient is at most this (>= 0).

    Returns:
        An :class:`LBFGSResult`.

    Raises:
        ValueError: ``init_params`` has no arrays, ``fun`` is not scalar,
            ``fun`` or its gradient is not finite at ``init_params``, or
            ``max_iter`` or ``tol`` is negative.

    Example:
        >>> import jax.numpy as jnp
        >>> res = lbfgs_minimize(lambda p: jnp.sum((p["a"] - 3.0) ** 2), {"a": jnp.zeros(2)})
        >>> res.params["a"].tolist()
        [3.0, 3.0]
        >>> res.status, res.converged
        ('converged', True)
    """
    if max_iter < 0 or not tol >= 0:
        raise ValueError(f"max_iter and tol must be >= 0, got max_iter={max_iter}, tol={tol}")
    init_params = jax.tree.map(lambda p: jnp.asarray(p, dtype=jnp.float64), init_params)
    leaves, treedef = jax.tree.flatten(init_params)
    if not leaves:
        raise ValueError("init_params has no arrays to optimise")
    structure = (treedef, tuple(tuple(leaf.shape) for leaf in leaves))
    x = np.concatenate([np.ravel(np.asarray(leaf)) for leaf in leaves])

    def evaluate(x):
        value, grad = _compiled_value_and_grad(fun, structure, jnp.asarray(x))
        if np.shape(value) != ():
            raise ValueError(f"fun must return a scalar, got shape {np.shape(value)}")
        return float(value), np.asarray(grad, dtype=np.float64)

    f, g = evaluate(x)
    if not np.isfinite(f):
        raise ValueError(f"fun is not finite at init_params (value {f})")
    bad = np.count_nonzero(~np.isfinite(g))
    if bad:
        raise ValueError(f"gradient of fun is not finite at init_params ({bad} of {g.size} "
                         "entries); start where fun is differentiable")
    pairs = deque(maxlen=MEMORY)
    iterations, stalled = 0, 0
    lowest_f, lowest_grad_norm = f, np.linalg.norm(g)
    while True:
        if np.linalg.norm(g) <= tol:
            status = "converged"
            break
        if iterations >= max_iter:
            status = "max_iter"
            break
        if stalled >= STALL_STEPS:
            status = "stalled"
            break
        p = _two_loop(g, pairs)
        if not g @ p < 0:  # not a descent direction: restart from steepest descent
            pairs.clear()
            p = -g
        # Without curvature pairs, move no coordinate further than 1 at first.
        alpha = 1.0 if pairs else min(1.0, 1.0 / np.max(np.abs(p)))
        alpha, x_new, f_new, g_new, _ = _line_search(evaluate, x, f, g, p, alpha)
        if alpha is None:
            if not pairs:  # steepest descent finds no acceptable step either
                status = "line_search_failed"
                break
            pairs.clear()
            continue
        s, y = x_new - x, g_new - g
        if s @ y > 1e-12 * np.linalg.norm(s) * np.linalg.norm(y):
            pairs.append((s, y, 1.0 / (s @ y)))
        x, f, g = x_new, f_new, g_new
        iterations += 1
        # Within rounding of f (the line search's slack) a step can leave f
        # where it was: it is progress if it sets a record in f or in |g|.
        progress = f < lowest_f or np.linalg.norm(g) < lowest_grad_norm
        stalled = 0 if progress else stalled + 1
        lowest_f, lowest_grad_norm = min(lowest_f, f), min(lowest_grad_norm, np.linalg.norm(g))
    sizes = np.cumsum([int(np.prod(shape)) for shape in structure[1]])[:-1]
    parts = [jnp.asarray(part.reshape(shape)) for part, shape in zip(np.split(x, sizes), structure[1])]
    return LBFGSResult(
        params=jax.tree.unflatten(treedef, parts),
        value=jnp.asarray(f),
        grad_norm=jnp.asarray(np.linalg.norm(g)),
        iterations=jnp.asarray(iterations),
        status=status,
    )
