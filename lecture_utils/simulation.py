r"""Simulate state-space models with ``lax.scan``, and plain NumPy references.

Time is the leading axis of every array. With ``T`` transitions,

.. math::

    x_{t+1} = f(x_t, w_t, p, t), \qquad y_t = g(x_t, p, t) + H v_t,
    \qquad t = 0, \dots, T,

so states ``x`` and observations ``y`` have ``T + 1`` rows, the transition
shocks ``w`` have ``T`` rows and the observation shocks ``v`` have ``T + 1``.
(Row ``w[t]`` is the shock written :math:`w_{t+1}` in the lectures' maths.)
The linear model is the special case :math:`f = A x + C w`, :math:`g = G x`.
"""

from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from lecture_utils._validation import as_float64, check_shape
from lecture_utils.lss import LSSModel, check_lss_model

__all__ = [
    "LSSModel", "lss_observation", "lss_transition", "simulate_lss", "simulate_ssm",
    "simulate_ssm_numpy",
]

Transition = Callable[[Any, Any, Any, Any], Any]  # f(x, w_t, params, t) -> x_next
Observation = Callable[[Any, Any, Any], Any]  # g(x, params, t) -> noiseless y


def lss_transition(x, w_t, model: LSSModel, t):
    """Linear transition ``A x + C w_t``; works on NumPy and JAX arrays alike."""
    return model.A @ x + model.C @ w_t


def lss_observation(x, model: LSSModel, t):
    """Noiseless linear observation ``G x``; works on NumPy and JAX arrays alike."""
    return model.G @ x


def _check_time_inputs(x0, w, v, N, K, L):
    """Validate x0 (N,), w (T, K) and, unless L is None, v (T + 1, L)."""
    x0 = as_float64("x0", x0)
    check_shape("x0", x0, (N,))
    w = as_float64("w", w)
    check_shape("w", w, (None, K))
    if w.shape[0] == 0:
        raise ValueError("w must have at least one row (T >= 1), got shape (0, K)")
    if L is not None:
        v = as_float64("v", v)
        check_shape("v", v, (w.shape[0] + 1, L))
    return x0, w, v


def simulate_lss(model: LSSModel, x0, w, v):
    """Simulate a linear state-space model.

    Args:
        model: ``LSSModel`` with A (N, N), C (N, K), G (M, N), H (M, L).
        x0: (N,) initial state.
        w: (T, K) state shocks; ``w[t]`` moves ``x[t]`` to ``x[t + 1]``.
        v: (T + 1, L) observation shocks.

    Returns:
        ``(x, y)`` with x (T + 1, N), ``x[0] = x0``, and y (T + 1, M).

    Example:
        >>> import numpy as np
        >>> m = LSSModel(A=[[0.5]], C=[[1.0]], G=[[2.0]], H=[[0.0]])
        >>> x, y = simulate_lss(m, x0=[1.0], w=[[0.0], [1.0]], v=np.zeros((3, 1)))
        >>> x.ravel().tolist(), y.ravel().tolist()
        ([1.0, 0.5, 1.25], [2.0, 1.0, 2.5])
    """
    model, (N, K, M, L) = check_lss_model(model)
    x0, w, v = _check_time_inputs(x0, w, v, N, K, L)
    return _simulate_lss(model, x0, w, v)


@jax.jit
def _simulate_lss(model, x0, w, v):
    A, C, G, H = model

    def transition(x, w_t, params, t):
        return A @ x + C @ w_t

    def observation(x, params, t):
        return G @ x + H @ v[t]

    return _scan_paths(transition, observation, x0, w, None)


def _scan_paths(f, g, x0, w, params):
    """Scan over t = 0..T, emitting ``(x[t], g(x[t], params, t))`` as outputs.

    The scan writes each period's state and observation straight into the
    output arrays, so XLA needs no scratch that grows with T (stacking the
    states first and concatenating ``x0`` in front would copy the whole path).
    Row ``w[t]`` is read by index; the unused transition at t = T reads a
    clamped index.
    """
    T = w.shape[0]

    def step(carry, _):
        x, t = carry
        x_next = f(x, w[jnp.minimum(t, T - 1)], params, t)
        return (x_next, t + 1), (x, g(x, params, t))

    _, (x, y) = lax.scan(step, (x0, jnp.zeros((), dtype=int)), length=T + 1)
    return x, y


def simulate_ssm(f: Transition, g: Observation, x0, w, v, H, params):
    """Simulate a (possibly nonlinear) state-space model with additive noise.

    Args:
        f: transition ``f(x, w_t, params, t) -> x_next`` of shape (N,).
        g: noiseless observation ``g(x, params, t) -> y`` of shape (M,).
        x0: (N,) initial state.
        w: (T, K) state shocks.
        v: (T + 1, L) observation shocks; ignored (may be None) when H is None.
        H: (M, L) loading of the observation shocks, or None for none at all
            (decided when tracing, so no zero matrix is multiplied).
        params: any pytree passed through to ``f`` and ``g``.

    Returns:
        ``(x, y)`` with x (T + 1, N) and y (T + 1, M); ``t`` is passed to the
        callbacks as an integer array, so ``f`` and ``g`` are traced once.
    """
    if np.ndim(x0) != 1:
        raise ValueError(f"x0 must have shape (N,), got {np.shape(x0)}")
    N = np.shape(x0)[0]
    w_arr = as_float64("w", w)
    check_shape("w", w_arr, (None, None))
    L = None
    if H is not None:
        H = as_float64("H", H)
        check_shape("H", H, (None, None))
        L = H.shape[1]
    x0, w, v = _check_time_inputs(x0, w_arr, v, N, w_arr.shape[1], L)
    t0 = jnp.zeros((), dtype=int)
    x_next = jax.eval_shape(f, x0, w[0], params, t0)
    if x_next.shape != (N,):
        raise ValueError(f"f must return shape ({N},) like x0, got {x_next.shape}")
    y0 = jax.eval_shape(g, x0, params, t0)
    if len(y0.shape) != 1:
        raise ValueError(f"g must return a vector (M,), got shape {y0.shape}")
    if H is not None:
        check_shape("H", H, (y0.shape[0], L))
    return _simulate_ssm(f, g, x0, w, v, H, params)


@partial(jax.jit, static_argnums=(0, 1))
def _simulate_ssm(f, g, x0, w, v, H, params):
    def observation(x, params, t):
        y = g(x, params, t)
        return y if H is None else y + H @ v[t]

    return _scan_paths(f, observation, x0, w, params)


def simulate_ssm_numpy(f: Transition, g: Observation, x0, w, v, H, params, *, out=None):
    """NumPy reference for :func:`simulate_ssm`, writing into preallocated buffers.

    The same callbacks serve both paths: written with ``@`` and ``+`` they
    accept NumPy arrays here and JAX arrays under ``lax.scan``.

    Args:
        out: optional ``(x, y)`` buffers of shapes (T + 1, N) and (T + 1, M),
            overwritten in place; allocated when None.

    Returns:
        ``(x, y)``, the buffers that were written.
    """
    x0, w = np.asarray(x0, dtype=float), np.asarray(w, dtype=float)
    T, N = w.shape[0], x0.shape[0]
    if out is None:
        M = np.shape(g(x0, params, 0))[0]
        out = (np.empty((T + 1, N)), np.empty((T + 1, M)))
    x, y = out
    x[0] = x0
    for t in range(T):
        x[t + 1] = f(x[t], w[t], params, t)
    for t in range(T + 1):
        y[t] = g(x[t], params, t)
        if H is not None:
            y[t] += H @ v[t]
    return x, y
