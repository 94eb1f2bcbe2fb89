r"""Particle filters for nonlinear state-space models, and their gradients.

Two filters share one resampling step and one time loop (``lax.scan`` over
time, arrays over particles, no Python loop over either):

* :func:`bootstrap_filter`: the bootstrap filter of a model written with the
  callbacks of :func:`lecture_utils.simulation.simulate_ssm`,

  .. math::

      x_{t+1} = f(x_t, w_t, \theta, t), \qquad
      y_t = g(x_{t+1}, \theta, t + 1) + H v_t, \qquad
      w_t \sim N(0, I_K),\; v_t \sim N(0, I_L),

  where ``H`` is a fixed (M, L) matrix or a callback ``H(x, theta, t)`` (a
  state-dependent noise scale, as in stochastic volatility).
* :func:`rb_filter`: the Rao-Blackwellised (marginalised) filter of a
  conditionally linear-Gaussian model: particles carry the nonlinear state
  :math:`z_t` and, for each particle, a Kalman filter carries the law of the
  linear state :math:`s_t` given :math:`z_{1:t}` and :math:`y_{0:t-1}`:

  .. math::

      z_{t+1} = f_z(z_t, w_t, \theta, t), \qquad
      s_{t+1} = A s_t + C e_t, \qquad y_t = G s_{t+1} + H v_t,

  with ``(A, C, G, H) = linear(z_{t+1}, theta, t)``. The Kalman step is the
  Kalman package's own (:mod:`lecture_utils.kalman._steps`), vmapped over
  particles.

:func:`backward_sample` draws smoothed paths from a bootstrap filter's output
by backward simulation, and :func:`score_estimates` puts three gradient
estimators side by side.

Timing is the book's Kalman convention: ``y[t]`` observes the state after the
``t``-th move, so ``T`` observations ``y`` (T, M) need ``T`` moves, and the
initial particles ``x0`` (P, N) are draws of :math:`x_0` (the prior of the
state *before* the first observation; the Kalman filter's ``mu0, Sigma0``).

**The algorithm** (Chopin and Papaspiliopoulos 2020, Algorithm 10.1 with
adaptive resampling). With normalised weights :math:`W_{t-1}^n`, at step
:math:`t`: if :math:`t > 0` and :math:`\mathrm{ESS}_{t-1} =
1 / \sum_n (W^n_{t-1})^2 < \kappa P` (``ess_threshold`` :math:`\kappa`;
:math:`\kappa \ge 1` resamples at every step, :math:`\kappa = 0` never),
draw ancestors :math:`a^n` by systematic resampling and set
:math:`\hat W^n = 1/P`; else :math:`a^n = n`, :math:`\hat W^n = W^n_{t-1}`.
Then move :math:`x_{t+1}^n = f(x_t^{a^n}, w_t^n)`, weight by
:math:`G_t^n = p(y_t \mid x_{t+1}^n)` and add

.. math::

    \log \hat\ell_t = \log \sum_n \hat W^n G_t^n, \qquad
    W_t^n = \hat W^n G_t^n / \textstyle\sum_m \hat W^m G_t^m

to the log-likelihood estimate :math:`\log \hat L = \sum_t \log \hat\ell_t`.
:math:`\hat L` (not its log) is unbiased for the likelihood. Everything is
in logs (log-sum-exp). An observation that every particle makes impossible
(zero density, a singular noise covariance, a NaN) gives
:math:`\log \hat\ell_t = -\infty`, a finite gradient, and the filter goes on
with uniform weights.

**Random numbers** are inputs: :class:`FilterNoise` holds standard normals
only, ``normals`` (T, P, K) for the moves and ``resampling`` (T,) whose
normal CDF is the systematic-resampling uniform. Passing the same noise at
two parameter values gives common random numbers; a Crank-Nicolson move of
it gives correlated pseudo-marginal MCMC (:mod:`lecture_utils.pmmh`).
``order`` sorts the particles by a scalar before resampling, which keeps the
likelihood estimate close to continuous in the parameters for 1-D ordering
(Deligiannidis, Doucet and Pitt 2018).

**Gradients** (:func:`score_estimates` puts the three side by side). The
estimate is piecewise differentiable in :math:`\theta` for fixed noise:
the ancestors are integers, so autodiff cannot see how resampling depends
on :math:`\theta`.

* ``gradient="naive"``: autodiff with the resampled weights reset to the
  constant :math:`1/P`. Biased, and the bias does not vanish as P grows.
* ``gradient="fisher"`` (default): after resampling, :math:`\log \hat W^n =
  -\log P + \log W^{a^n}_{t-1} - \bot(\log W^{a^n}_{t-1})` with
  :math:`\bot` the stop-gradient (Scibior and Wood 2021). The value is
  unchanged; the gradient becomes
  :math:`\sum_n W_T^n \nabla_\theta \log p_\theta(x^n_{0:T}, y_{0:T-1})`
  along each particle's ancestral line: Fisher's identity
  :math:`\nabla \log p(y) = E[\nabla \log p(x, y) \mid y]` estimated on the
  particle genealogy (Poyiadjis, Doucet and Singh 2011). Consistent, with a
  bias of order 1/P; its variance grows with T (path degeneracy).
* finite differences of :math:`\log \hat L` on common random numbers.

Shapes: ``T`` observations, ``P`` particles, ``N`` states (``Nz`` nonlinear,
``Ns`` linear in the Rao-Blackwellised filter), ``M`` observables (M <= 6),
``K`` move shocks, ``L`` observation shocks.
"""

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.special import logsumexp, ndtr

from lecture_utils._validation import as_float64, check_shape
from lecture_utils.kalman import _linalg as sl
from lecture_utils.kalman._steps import LOG_2PI, condition_on, masked, noise_covariances, predict
from lecture_utils.lss import LSSModel

__all__ = [
    "FilterNoise", "FilterResult", "RBFilterResult", "ScoreEstimates", "backward_sample",
    "bootstrap_filter", "draw_noise", "effective_sample_size", "hilbert_order", "rb_filter",
    "score_estimates", "systematic_resample",
]

GRADIENTS = ("naive", "fisher")


class FilterNoise(NamedTuple):
    """The standard normals that drive a particle filter (a pytree).

    Attributes:
        normals: (T, P, K) shocks ``w_t^n`` of the moves.
        resampling: (T,) normals ``z_t``; systematic resampling at step t uses
            the uniform ``Phi(z_t)``.
    """

    normals: jax.Array
    resampling: jax.Array


class FilterResult(NamedTuple):
    """Output of :func:`bootstrap_filter`.

    Attributes:
        loglik: () :math:`\\log \\hat L`, the log of an unbiased likelihood estimate.
        loglik_increments: (T,) :math:`\\log \\hat\\ell_t`.
        particles: (T, P, N) :math:`x_{t+1}^n`, the particles that weight ``y[t]``
            (with ``history=False``: (P, N), the last period's).
        log_weights: (T, P) normalised log weights :math:`\\log W_t^n`
            (``history=False``: (P,)).
        ess: (T,) effective sample size :math:`1/\\sum_n (W_t^n)^2`, in [1, P].
        resampled: (T,) bool, whether step t resampled before moving.
        ancestors: (T, P) int, :math:`a^n`: particle n of step t moved from
            particle ``ancestors[t, n]`` of step t - 1 (the identity where not
            resampled; ``history=False``: (P,), the last step's).
    """

    loglik: jax.Array
    loglik_increments: jax.Array
    particles: jax.Array
    log_weights: jax.Array
    ess: jax.Array
    resampled: jax.Array
    ancestors: jax.Array


class RBFilterResult(NamedTuple):
    """Output of :func:`rb_filter`: :class:`FilterResult`'s fields, and the Kalman moments.

    ``particles`` are the nonlinear states :math:`z_{t+1}^n` (T, P, Nz), and
    ``mu`` (T, P, Ns), ``Sigma`` (T, P, Ns, Ns) the mean and covariance of
    :math:`s_{t+1}` given particle n's path and :math:`y_{0:t}` (with
    ``history=False``: the last period's, without the T axis).
    """

    loglik: jax.Array
    loglik_increments: jax.Array
    particles: jax.Array
    mu: jax.Array
    Sigma: jax.Array
    log_weights: jax.Array
    ess: jax.Array
    resampled: jax.Array
    ancestors: jax.Array


class ScoreEstimates(NamedTuple):
    """Three estimates of :math:`\\nabla_\\theta \\log p(y)` from one noise draw (d,) each."""

    naive: jax.Array
    fisher: jax.Array
    finite_difference: jax.Array


# ----- the pieces --------------------------------------------------------------------


def draw_noise(key, T: int, num_particles: int, K: int) -> FilterNoise:
    """Draw a :class:`FilterNoise` for T steps, P = ``num_particles``, K shocks per move.

    Example:
        >>> noise = draw_noise(jax.random.key(0), T=5, num_particles=100, K=2)
        >>> noise.normals.shape, noise.resampling.shape
        ((5, 100, 2), (5,))
    """
    for name, value, low in (("T", T, 1), ("num_particles", num_particles, 1), ("K", K, 1)):
        if not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    k_move, k_resample = jax.random.split(key)
    return FilterNoise(jax.random.normal(k_move, (T, num_particles, K)),
                       jax.random.normal(k_resample, (T,)))


def effective_sample_size(log_weights):
    """:math:`(\\sum_n w^n)^2 / \\sum_n (w^n)^2` from (P,) unnormalised log weights.

    Example:
        >>> float(effective_sample_size(jnp.log(jnp.array([1.0, 1.0, 2.0]))))
        2.6666666666666665
    """
    return jnp.exp(2 * logsumexp(log_weights) - logsumexp(2 * log_weights))


def systematic_resample(log_weights, u):
    r"""Systematic resampling: ancestor indices (P,) from (P,) log weights and one uniform.

    With normalised weights :math:`W^n` and cumulative sums
    :math:`c_n = \sum_{m \le n} W^m`, position :math:`i` takes the ancestor
    :math:`a^i = \#\{n : c_n \le (i + u)/P\}`, so particle n has
    :math:`\lceil P c_n - u \rceil - \lceil P c_{n-1} - u \rceil` offspring
    (Chopin and Papaspiliopoulos 2020, Sec. 9.6). Computed without a search:
    particle n's count is added at position :math:`\lceil P c_n - u \rceil`
    and a cumulative sum gives every :math:`a^i` (O(P)). The indices are sorted.

    Example:
        >>> w = jnp.log(jnp.array([0.1, 0.6, 0.3]))
        >>> systematic_resample(w, 0.5).tolist()
        [1, 1, 2]
    """
    return _systematic_ancestors(jnp.exp(log_weights - logsumexp(log_weights)), u)


def _cumsum(v, block: int = 32):
    """Cumulative sum of a (P,) float array by blocks: one matrix product sums within
    blocks of ``block`` entries, and a cumulative sum of the P / ``block`` block totals
    offsets them. Equal to ``jnp.cumsum`` up to rounding; XLA:CPU runs ``jnp.cumsum``
    as a tree of reduce-windows, slower and a larger program to compile.
    """
    P = v.shape[0]
    rows = -(-P // block)
    blocks = jnp.pad(v, (0, rows * block - P)).reshape(rows, block)
    within = blocks @ jnp.triu(jnp.ones((block, block), v.dtype))
    totals = within[:, -1]
    return (within + (jnp.cumsum(totals) - totals)[:, None]).reshape(-1)[:P]


def _systematic_ancestors(weights, u):
    """:func:`systematic_resample` of (P,) normalised weights (not logs).

    The offspring counts are summed in floating point: exact, as integers below 2^53.
    """
    P = weights.shape[0]
    cdf = _cumsum(weights)
    first = jnp.clip(jnp.ceil(P * cdf - u), 0, P).astype(jnp.int32)
    passed = jnp.zeros(P + 1, jnp.int32).at[first].add(1)
    return jnp.minimum(_cumsum(passed[:P].astype(weights.dtype)).astype(jnp.int32), P - 1)


def hilbert_order(low, high, bits: int = 16) -> Callable:
    r"""An ``order`` for 2-D states: the position on a Hilbert curve through a fixed box.

    Sorting by one coordinate keeps nearby particles together only in 1-D. The
    Hilbert curve visits the :math:`2^{b} \times 2^{b}` cells of the box
    ``[low, high]`` (per coordinate) so that consecutive cells are neighbours,
    and sorting by the curve's index keeps particles that are close in the
    plane close in the resampling order (the Hilbert sort of Deligiannidis,
    Doucet and Pitt 2018, here on a fixed box so that it works one particle at
    a time). Points outside the box go to its edge.

    Args:
        low, high: (2,) corners of the box.
        bits: cells per side :math:`2^{b}` (b <= 30).

    Returns:
        ``order(x) -> ()`` (an integer index) for ``x`` of shape (2,) or more
        (the first two coordinates are used).

    Example (the first-order curve visits (0, 0), (0, 1), (1, 1), (1, 0)):

    >>> key = hilbert_order([0.0, 0.0], [1.0, 1.0], bits=1)
    >>> [int(key(jnp.array(p))) for p in ([0.2, 0.2], [0.2, 0.8], [0.8, 0.8], [0.8, 0.2])]
    [0, 1, 2, 3]
    """
    low, high = np.asarray(low, float), np.asarray(high, float)
    if low.shape != (2,) or high.shape != (2,) or not np.all(high > low):
        raise ValueError(f"low and high must be (2,) with high > low, got {low} and {high}")
    if not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 30:
        raise ValueError(f"bits must be an integer in [1, 30], got {bits!r}")
    n = 2**bits

    def order(x):
        cell = jnp.floor((x[:2] - low) / (high - low) * n)
        cell = jnp.clip(jnp.nan_to_num(cell), 0, n - 1).astype(jnp.int64)
        i, j = cell[0], cell[1]
        d = jnp.zeros((), jnp.int64)
        for level in reversed(range(bits)):
            s = 2**level
            ri = (i & s) > 0
            rj = (j & s) > 0
            d = d + s * s * ((3 * ri.astype(jnp.int64)) ^ rj.astype(jnp.int64))
            flip = (~rj) & ri
            i, j = jnp.where(flip, n - 1 - i, i), jnp.where(flip, n - 1 - j, j)
            i, j = jnp.where(~rj, j, i), jnp.where(~rj, i, j)
        return d

    return order


def _ancestors(log_weights, z, keys):
    """Systematic-resampling ancestors (P,) of (P,) normalised log weights (the filter's,
    so no log-sum-exp again), the particles sorted by ``keys`` if given."""
    u = ndtr(z)
    weights = jnp.exp(log_weights)
    if keys is None:
        return _systematic_ancestors(weights, u)
    perm = jnp.argsort(keys)
    return perm[_systematic_ancestors(weights[perm], u)]


def _resampled_log_weights(log_weights, a, gradient):
    r"""The log weights :math:`\log \hat W^n` after resampling to ancestors ``a``.

    ``-log P``, plus the stop-gradient term of ``"fisher"``.
    """
    P = log_weights.shape[0]
    log_w_hat = jnp.full((P,), -jnp.log(P), dtype=log_weights.dtype)
    if gradient == "fisher":
        picked = log_weights[a]
        log_w_hat = log_w_hat + (picked - lax.stop_gradient(picked))
    return log_w_hat


def _maybe_resample(arrays, log_weights, z, do, gradient, order):
    """Systematic resampling where ``do``, else the arrays and weights as they are.

    Only the ancestors are chosen under ``lax.cond`` (the identity where not
    resampled); the arrays are then gathered by them in either case, so the
    gather fuses into the move that follows instead of the particle arrays
    being copied into and out of a conditional at every step.
    """
    P = log_weights.shape[0]

    def resample(operands):
        keys = None if order is None else jax.vmap(order)(operands[0])
        return _ancestors(operands[1], z, keys).astype(jnp.int32)

    def keep(operands):
        return jnp.arange(P, dtype=jnp.int32)

    a = lax.cond(do, resample, keep, (arrays[0], log_weights))
    log_w_hat = jnp.where(do, _resampled_log_weights(log_weights, a, gradient), log_weights)
    return jax.tree.map(lambda x: x[a], arrays), log_w_hat, a.astype(int)


def _reweight(log_w_hat, log_g):
    r"""Increment (), normalised log weights (P,) and ESS () from log W_hat and log G.

    Non-finite log G (NaN, +inf from a broken model) counts as an impossible
    observation; when every particle is impossible the increment is -inf and
    the weights become uniform, with finite derivatives on both sides. One
    pass of :math:`e^n = \exp(\log w^n - \max_m \log w^m)` gives both the
    log-sum-exp and the ESS, :math:`(\sum_n e^n)^2 / \sum_n (e^n)^2`.
    """
    P = log_g.shape[0]
    log_w = log_w_hat + log_g
    log_w = jnp.where(jnp.isfinite(log_w), log_w, -jnp.inf)
    top = jnp.max(log_w)
    all_bad = top == -jnp.inf
    log_w = jnp.where(all_bad, 0.0, log_w)
    shift = lax.stop_gradient(jnp.where(all_bad, 0.0, top))
    e = jnp.exp(log_w - shift)  # in [0, 1], the largest 1: no overflow
    total = jnp.sum(e)
    lse = shift + jnp.log(total)
    increment = jnp.where(all_bad, -jnp.inf, lse)
    ess = jnp.where(all_bad, P, total**2 / jnp.sum(e * e))
    return increment, log_w - lse, ess


def _resample_decision(ess, P, t, ess_threshold):
    """Resample before step t > 0 if the last ESS is below ``ess_threshold`` P (always if >= 1)."""
    return (t > 0) & ((ess_threshold >= 1) | (ess < ess_threshold * P))


def _obs_factor(y_t, R):
    """Observed entries, data, Cholesky factor (list), ok and log-determinant of ``R``."""
    M = y_t.shape[0]
    m, y0, _, Rm = masked(y_t, jnp.zeros((M, 1), R.dtype), R)
    L, ok = sl.cholesky(Rm)
    log_det = 2.0 * sum(jnp.log(L[i][i]) for i in range(M))
    return m, y0, L, ok, log_det


def _obs_logpdf(factor, mean):
    """log N(y_t; mean, R) over the observed entries, -inf where R is singular."""
    m, y0, L, ok, log_det = factor
    resid = jnp.where(m > 0, y0 - mean, 0.0)
    z = sl.solve_lower(L, list(resid))
    quad = sum(z_i * z_i for z_i in z)
    ll = -0.5 * (jnp.sum(m) * LOG_2PI + log_det + quad)
    return jnp.where(ok, ll, -jnp.inf)


# ----- checks ------------------------------------------------------------------------


def _check_common(y, noise, P, ess_threshold, gradient):
    y = as_float64("y", y)
    check_shape("y", y, (None, None))
    T, M = y.shape
    if T < 1:
        raise ValueError(f"y must have at least one row (T >= 1), got shape {y.shape}")
    if M > sl.MAX_UNROLLED_M:
        raise ValueError(f"y must have at most {sl.MAX_UNROLLED_M} columns (M), got {M}")
    if P < 1:
        raise ValueError(f"num_particles (the first axis of the initial particles) must be "
                         f">= 1, got {P}")
    if not isinstance(noise, FilterNoise):
        raise ValueError(f"noise must be a FilterNoise (see draw_noise), got "
                         f"{type(noise).__name__}")
    normals = as_float64("noise.normals", noise.normals)
    check_shape("noise.normals", normals, (T, P, None))
    resampling = as_float64("noise.resampling", noise.resampling)
    check_shape("noise.resampling", resampling, (T,))
    if np.ndim(ess_threshold) != 0:
        raise ValueError(f"ess_threshold must be a scalar, got shape {np.shape(ess_threshold)}")
    if not isinstance(ess_threshold, jax.core.Tracer) and not 0 <= float(ess_threshold) <= 1:
        raise ValueError(f"ess_threshold must be in [0, 1] (a share of P; 1 resamples at "
                         f"every step), got {ess_threshold}")
    if gradient not in GRADIENTS:
        raise ValueError(f"gradient must be one of {GRADIENTS}, got {gradient!r}")
    return y, FilterNoise(normals, resampling), jnp.asarray(ess_threshold, jnp.float64)


def _check_callback_shape(name, out, shape):
    if getattr(out, "shape", None) != tuple(shape):
        raise ValueError(f"{name} must return shape {tuple(shape)}, got "
                         f"{getattr(out, 'shape', type(out).__name__)}")


def _check_order(order, x):
    if order is not None:
        _check_callback_shape("order", jax.eval_shape(order, x[0]), ())


# ----- the bootstrap filter ------------------------------------------------------------


def bootstrap_filter(f: Callable, g: Callable, H, params: Any, y, x0, noise: FilterNoise, *,
                     ess_threshold=0.5, gradient: str = "fisher", order: Callable | None = None,
                     history: bool = True) -> FilterResult:
    """Run the bootstrap particle filter; jit- and vmap-able (over noise, params, data).

    Args:
        f: transition ``f(x, w_t, params, t) -> x_next`` (N,), as in ``simulate_ssm``.
        g: noiseless observation ``g(x, params, t) -> (M,)``; ``y[t]`` is
            compared with ``g(x_{t+1}, params, t + 1)``.
        H: the (M, L) loading of the observation noise, or a callback
            ``H(x, params, t) -> (M, L)`` for a state-dependent one.
        params: any pytree, passed to the callbacks (differentiable).
        y: (T, M) observations; NaN marks a missing entry.
        x0: (P, N) draws of the initial state :math:`x_0`, equally weighted.
        noise: a :class:`FilterNoise` with normals (T, P, K) and resampling (T,).
        ess_threshold: resample when ESS < ess_threshold * P; in [0, 1],
            1 = at every step, 0 = never (default 0.5).
        gradient: ``"fisher"`` (default) or ``"naive"``: what ``jax.grad`` of
            ``loglik`` computes (see the module docstring); values are equal.
        order: optional ``order(x) -> ()``; particles are sorted by it before
            resampling (use ``lambda x: x[0]`` for a 1-D state in correlated
            pseudo-marginal MCMC).
        history: keep every period's particles, weights and ancestors (else
            only the last period's: memory independent of T).

    The callbacks (``f``, ``g``, a callable ``H``, ``order``) are static
    arguments of the compiled filter: define them once (a new lambda per call
    compiles again).

    Returns:
        A :class:`FilterResult`.

    Raises:
        ValueError: naming the argument, for wrong shapes, a threshold outside
            [0, 1], an unknown ``gradient``, fewer than one particle.

    Example (a random walk observed with noise, from x_0 = 0; the Kalman
    filter gives -4.1224):

    >>> import jax.numpy as jnp
    >>> f = lambda x, w, p, t: x + w
    >>> g = lambda x, p, t: x
    >>> y = jnp.array([[0.3], [-0.1], [0.5]])
    >>> x0 = jnp.zeros((1000, 1))
    >>> noise = draw_noise(jax.random.key(1), T=3, num_particles=1000, K=1)
    >>> res = bootstrap_filter(f, g, jnp.eye(1), None, y, x0, noise)
    >>> res.particles.shape, res.ess.shape
    ((3, 1000, 1), (3,))
    >>> bool(abs(res.loglik - (-4.1224)) < 0.1)
    True
    """
    x0 = as_float64("x0", x0)
    check_shape("x0", x0, (None, None))
    P, N = x0.shape
    y, noise, ess_threshold = _check_common(y, noise, P, ess_threshold, gradient)
    M = y.shape[1]
    t0 = jnp.zeros((), dtype=int)
    _check_callback_shape("f", jax.eval_shape(f, x0[0], noise.normals[0, 0], params, t0), (N,))
    _check_callback_shape("g", jax.eval_shape(g, x0[0], params, t0), (M,))
    if callable(H):
        out = jax.eval_shape(H, x0[0], params, t0)
        if len(getattr(out, "shape", ())) != 2 or out.shape[0] != M:
            raise ValueError(f"H must return shape ({M}, L), got {getattr(out, 'shape', out)}")
        H_fn, H_mat = H, None
    else:
        H_mat = as_float64("H", H)
        check_shape("H", H_mat, (M, None))
        H_fn = None
    _check_order(order, x0)
    return _bootstrap(f, g, H_fn, order, gradient, history, H_mat, params, y, x0, noise,
                      ess_threshold)


@partial(jax.jit, static_argnums=(0, 1, 2, 3, 4, 5))
def _bootstrap(f, g, H_fn, order, gradient, history, H_mat, params, y, x0, noise,
               ess_threshold):
    T = y.shape[0]

    def step(carry, inputs):
        x, log_w, _, ess = carry
        y_t, w_t, z_t, t = inputs
        do = _resample_decision(ess, P, t, ess_threshold)
        (x,), log_w_hat, a = _maybe_resample((x,), log_w, z_t, do, gradient, order)
        x_new = jax.vmap(f, (0, 0, None, None))(x, w_t, params, t)
        mean = jax.vmap(g, (0, None, None))(x_new, params, t + 1)
        if H_fn is None:
            factor = _obs_factor(y_t, H_mat @ H_mat.T)
            log_g = jax.vmap(partial(_obs_logpdf, factor))(mean)
        else:
            def one(x_n, mean_n):
                H_n = H_fn(x_n, params, t + 1)
                return _obs_logpdf(_obs_factor(y_t, H_n @ H_n.T), mean_n)
            log_g = jax.vmap(one)(x_new, mean)
        increment, log_w, ess = _reweight(log_w_hat, log_g)
        out = (increment, ess, do) + ((x_new, log_w, a) if history else ())
        return (x_new, log_w, a, ess), out

    P = x0.shape[0]
    init = (x0, jnp.full((P,), -jnp.log(P)), jnp.arange(P), jnp.asarray(P, jnp.float64))
    inputs = (y, noise.normals, noise.resampling, jnp.arange(T))
    (x, log_w, a, _), out = lax.scan(step, init, inputs)
    increments, ess, resampled = out[:3]
    paths = out[3:] if history else (x, log_w, a)
    return FilterResult(jnp.sum(increments), increments, paths[0], paths[1], ess, resampled,
                        paths[2])


# ----- the Rao-Blackwellised filter -----------------------------------------------------


def rb_filter(f_z: Callable, linear: Callable, params: Any, y, z0, mu0, Sigma0,
              noise: FilterNoise, *, ess_threshold=0.5, gradient: str = "fisher",
              order: Callable | None = None, history: bool = True,
              jitter: float = 1e-8) -> RBFilterResult:
    r"""Run the Rao-Blackwellised particle filter of a conditionally linear-Gaussian model.

    Particle n carries :math:`z^n_{t+1}` and the Kalman moments
    :math:`(\mu^n_{t+1}, \Sigma^n_{t+1})` of :math:`s_{t+1}`; its weight is
    the Kalman filter's predictive density
    :math:`p(y_t \mid z^n_{1:t+1}, y_{0:t-1}) = N(y_t; G \hat\mu, G \hat\Sigma G' + H H')`,
    so the linear state is integrated out exactly and only :math:`z` is
    sampled (a smaller variance of the likelihood estimate at equal P, by the
    Rao-Blackwell theorem).

    Args:
        f_z: move of the nonlinear state ``f_z(z, w_t, params, t) -> (Nz,)``.
        linear: ``linear(z_next, params, t) -> LSSModel(A, C, G, H)`` with A
            (Ns, Ns), C (Ns, Ks), G (M, Ns), H (M, L): the linear model of step
            t given :math:`z_{t+1}` (``s_{t+1} = A s_t + C e_t``,
            ``y_t = G s_{t+1} + H v_t``).
        params: any pytree, passed to the callbacks.
        y: (T, M) observations; NaN marks a missing entry.
        z0: (P, Nz) draws of :math:`z_0`.
        mu0, Sigma0: (Ns,), (Ns, Ns) the law of :math:`s_0` (the same for every particle).
        noise: a :class:`FilterNoise` whose normals (T, P, K) drive ``f_z``.
        ess_threshold, gradient, order, history: as in :func:`bootstrap_filter`.
        jitter: the Kalman step's relative jitter on ``S_t`` (as in ``kalman_filter``).

    Returns:
        An :class:`RBFilterResult`.

    Example (a local level model whose noise variances are particles that
    never move: every particle's Kalman filter is the exact one):

    >>> import jax.numpy as jnp
    >>> from lecture_utils.kalman import kalman_loglik
    >>> f_z = lambda z, w, p, t: z
    >>> linear = lambda z, p, t: LSSModel(jnp.eye(1), jnp.exp(z[:1, None] / 2),
    ...                                   jnp.eye(1), jnp.exp(z[1:, None] / 2))
    >>> y = jnp.array([[0.3], [-0.1], [0.5]])
    >>> noise = draw_noise(jax.random.key(0), T=3, num_particles=4, K=2)
    >>> res = rb_filter(f_z, linear, None, y, jnp.zeros((4, 2)), jnp.zeros(1),
    ...                 jnp.eye(1), noise)
    >>> exact = kalman_loglik(LSSModel(*(jnp.eye(1),) * 4), jnp.zeros(1), jnp.eye(1), y)
    >>> bool(jnp.isclose(res.loglik, exact, rtol=1e-12))
    True
    """
    z0 = as_float64("z0", z0)
    check_shape("z0", z0, (None, None))
    P, Nz = z0.shape
    y, noise, ess_threshold = _check_common(y, noise, P, ess_threshold, gradient)
    M = y.shape[1]
    mu0 = as_float64("mu0", mu0)
    check_shape("mu0", mu0, (None,))
    Ns = mu0.shape[0]
    Sigma0 = as_float64("Sigma0", Sigma0)
    check_shape("Sigma0", Sigma0, (Ns, Ns))
    t0 = jnp.zeros((), dtype=int)
    _check_callback_shape("f_z", jax.eval_shape(f_z, z0[0], noise.normals[0, 0], params, t0),
                          (Nz,))
    lss = jax.eval_shape(linear, z0[0], params, t0)
    if not isinstance(lss, LSSModel):
        raise ValueError(f"linear must return an LSSModel, got {type(lss).__name__}")
    _check_callback_shape("linear(...).A", lss.A, (Ns, Ns))
    _check_callback_shape("linear(...).C", lss.C, (Ns, lss.C.shape[-1]))
    _check_callback_shape("linear(...).G", lss.G, (M, Ns))
    _check_callback_shape("linear(...).H", lss.H, (M, lss.H.shape[-1]))
    _check_order(order, z0)
    return _rb(f_z, linear, order, gradient, history, params, y, z0, mu0, Sigma0, noise,
               ess_threshold, jitter)


def _kalman_step(mu, Sigma, model, y_t, jitter):
    """One predict-update of one particle's Kalman filter: mu, Sigma, log density."""
    Q, R = noise_covariances(model)
    mu_hat, Sigma_hat = predict(mu, Sigma, model.A, Q)
    upd = condition_on(mu_hat, Sigma_hat, y_t, model.G, R, jitter)
    return upd.mu, upd.Sigma, jnp.where(upd.ok, upd.loglik, -jnp.inf)


@partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _rb(f_z, linear, order, gradient, history, params, y, z0, mu0, Sigma0, noise,
        ess_threshold, jitter):
    T = y.shape[0]
    P = z0.shape[0]

    def step(carry, inputs):
        z, mu, Sigma, log_w, _, ess = carry
        y_t, w_t, r_t, t = inputs
        do = _resample_decision(ess, P, t, ess_threshold)
        (z, mu, Sigma), log_w_hat, a = _maybe_resample((z, mu, Sigma), log_w, r_t, do,
                                                       gradient, order)
        z_new = jax.vmap(f_z, (0, 0, None, None))(z, w_t, params, t)
        models = jax.vmap(linear, (0, None, None))(z_new, params, t)
        mu, Sigma, log_g = jax.vmap(_kalman_step, (0, 0, 0, None, None))(
            mu, Sigma, models, y_t, jitter)
        increment, log_w, ess = _reweight(log_w_hat, log_g)
        out = (increment, ess, do) + ((z_new, mu, Sigma, log_w, a) if history else ())
        return (z_new, mu, Sigma, log_w, a, ess), out

    init = (z0, jnp.broadcast_to(mu0, (P,) + mu0.shape),
            jnp.broadcast_to(Sigma0, (P,) + Sigma0.shape), jnp.full((P,), -jnp.log(P)),
            jnp.arange(P), jnp.asarray(P, jnp.float64))
    inputs = (y, noise.normals, noise.resampling, jnp.arange(T))
    last, out = lax.scan(step, init, inputs)
    increments, ess, resampled = out[:3]
    paths = out[3:] if history else last[:5]
    return RBFilterResult(jnp.sum(increments), increments, *paths[:4], ess, resampled,
                          paths[4])


# ----- smoothing by backward simulation --------------------------------------------------------


def backward_sample(key, result: FilterResult, transition_logpdf: Callable, params: Any,
                    num_samples: int):
    r"""Draw state paths from the smoothing distribution by backward simulation (FFBSi).

    Godsill, Doucet and West (2004); Chopin and Papaspiliopoulos (2020, Sec. 12.3):
    draw :math:`x_T` from the last period's weighted particles, then for
    :math:`t = T - 1, \dots, 1` draw :math:`x_t = x_t^i` with probability
    proportional to :math:`W_t^i\, p(x_{t+1} \mid x_t^i)`. Each draw is a path
    from the particle approximation of :math:`p(x_{1:T} \mid y_{0:T-1})`; unlike
    tracing the ancestors back, early periods do not collapse onto one
    particle. Cost O(T P S).

    Args:
        key: a ``jax.random`` key.
        result: a :class:`FilterResult` of :func:`bootstrap_filter` run with
            ``history=True`` (particles (T, P, N), log weights (T, P)).
        transition_logpdf: ``transition_logpdf(x_next, x, params, t) -> ()``, the
            log density of the move ``f(x, w_t, params, t)`` (the same t as f's).
        params: the parameters the filter ran with.
        num_samples: the number of paths S.

    Returns:
        (S, T, N) paths of :math:`x_1, \dots, x_T` (row t is the state ``y[t]`` observes).

    Example (a random walk observed with noise; the smoothed paths' mean):

    >>> import jax.numpy as jnp
    >>> from jax.scipy.stats import norm
    >>> f = lambda x, w, p, t: x + w
    >>> logpdf = lambda x_next, x, p, t: norm.logpdf(x_next[0], x[0])
    >>> y = jnp.array([[0.3], [-0.1], [0.5]])
    >>> res = bootstrap_filter(f, lambda x, p, t: x, jnp.eye(1), None, y,
    ...                        jnp.zeros((500, 1)), draw_noise(jax.random.key(1), 3, 500, 1))
    >>> paths = backward_sample(jax.random.key(2), res, logpdf, None, num_samples=100)
    >>> paths.shape
    (100, 3, 1)
    """
    if not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
        raise ValueError(f"num_samples must be an integer >= 1, got {num_samples!r}")
    if np.ndim(result.particles) != 3 or np.ndim(result.log_weights) != 2:
        raise ValueError("result must come from a filter run with history=True: particles "
                         f"(T, P, N), got shape {np.shape(result.particles)}")
    _check_callback_shape("transition_logpdf", jax.eval_shape(
        transition_logpdf, result.particles[0, 0], result.particles[0, 0], params,
        jnp.zeros((), dtype=int)), ())
    return _backward(transition_logpdf, num_samples, key, result.particles, result.log_weights,
                     params)


@partial(jax.jit, static_argnums=(0, 1))
def _backward(transition_logpdf, num_samples, key, particles, log_weights, params):
    T = particles.shape[0]
    keys = jax.random.split(key, T)
    last = particles[-1][jax.random.categorical(keys[-1], log_weights[-1], shape=(num_samples,))]
    # log p(x_next | x) for every path (S) and particle (P)
    logf = jax.vmap(jax.vmap(transition_logpdf, (None, 0, None, None)), (0, None, None, None))

    def step(x_next, inputs):
        x_t, log_w_t, key_t, t = inputs
        idx = jax.random.categorical(key_t, log_w_t[None, :] + logf(x_next, x_t, params, t + 1),
                                     axis=-1)
        return x_t[idx], x_t[idx]

    inputs = (particles[:-1], log_weights[:-1], keys[:-1], jnp.arange(T - 1))
    _, paths = lax.scan(step, last, inputs, reverse=True)
    return jnp.swapaxes(jnp.concatenate([paths, last[None]]), 0, 1)


# ----- gradients side by side -------------------------------------------------------------


def score_estimates(loglik: Callable, theta, noise, *, step: float = 1e-4) -> ScoreEstimates:
    r"""The naive, Fisher-identity and finite-difference scores at ``theta``, on one noise draw.

    Args:
        loglik: ``loglik(theta, noise, gradient) -> ()``, a log-likelihood
            estimate (e.g. ``bootstrap_filter(..., gradient=gradient).loglik``)
            whose value does not depend on ``gradient``.
        theta: (d,) parameters.
        noise: the random numbers (any pytree), held fixed: common random numbers.
        step: the central-difference step :math:`h`:
            :math:`(\log\hat L(\theta + h e_i) - \log\hat L(\theta - h e_i)) / 2h`.

    Returns:
        A :class:`ScoreEstimates` of three (d,) arrays. ``jax.vmap`` over
        ``noise`` gives their distributions over seeds.

    Example (the local-level model of :func:`bootstrap_filter`, theta = log
    variance of the state shock):

    >>> import jax.numpy as jnp
    >>> y = jnp.array([[0.3], [-0.1], [0.5]])
    >>> f = lambda x, w, p, t: x + jnp.exp(p[0] / 2) * w
    >>> g = lambda x, p, t: x
    >>> def loglik(theta, noise, gradient):
    ...     return bootstrap_filter(f, g, jnp.eye(1), theta, y, jnp.zeros((500, 1)),
    ...                             noise, gradient=gradient).loglik
    >>> s = score_estimates(loglik, jnp.zeros(1), draw_noise(jax.random.key(0), 3, 500, 1))
    >>> [v.shape for v in s]
    [(1,), (1,), (1,)]
    """
    theta = jnp.asarray(theta, jnp.float64)
    if theta.ndim != 1:
        raise ValueError(f"theta must have shape (d,), got {theta.shape}")
    naive = jax.grad(loglik)(theta, noise, "naive")
    fisher = jax.grad(loglik)(theta, noise, "fisher")
    steps = step * jnp.eye(theta.shape[0])
    values = jax.vmap(lambda th: loglik(th, noise, "naive"))(
        jnp.concatenate([theta + steps, theta - steps]))
    d = theta.shape[0]
    return ScoreEstimates(naive, fisher, (values[:d] - values[d:]) / (2 * step))
