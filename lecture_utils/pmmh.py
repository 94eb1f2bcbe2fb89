r"""Particle marginal Metropolis-Hastings with correlated pseudo-marginal moves.

PMMH (Andrieu, Doucet and Holenstein 2010) runs random-walk Metropolis on
:math:`\theta` with the exact likelihood replaced by a particle filter's
unbiased estimate :math:`\hat L(\theta, u)`, where :math:`u` are the filter's
random numbers. The chain on :math:`(\theta, u)` targets
:math:`p(\theta)\, \hat L(\theta, u)\, N(u; 0, I)`, whose
:math:`\theta`-marginal is the exact posterior :math:`p(\theta \mid y)`.

The correlated version (Deligiannidis, Doucet and Pitt 2018) moves the
standard normals :math:`u` by a Crank-Nicolson step, which leaves
:math:`N(0, I)` invariant,

.. math::

    \theta' = \theta + L z, \qquad u' = \rho u + \sqrt{1 - \rho^2}\, e,
    \qquad z, e \sim N(0, I),

and accepts with probability
:math:`\min\{1, \hat L(\theta', u') p(\theta') / \hat L(\theta, u) p(\theta)\}`.
With :math:`\rho` near 1 the two estimates are strongly correlated, so the
noise of their ratio is small and far fewer particles are needed;
:math:`\rho = 0` is standard PMMH. For the correlation to survive
resampling, the particles should be sorted before it (``order`` in
:mod:`lecture_utils.particle_filter`, for a 1-D state).

This module knows nothing about filters: ``loglik_fn(theta, u)`` is any
log-likelihood estimate driven by a pytree of standard normals ``u`` that
``noise_fn(key)`` draws. Chains run under ``jax.vmap``; the draws (C, S, d)
go straight to :func:`lecture_utils.sampling.to_inference_data` or
:func:`lecture_utils.sampling.summary`.
"""

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lecture_utils._validation import as_float64, check_shape

__all__ = ["PMMHResult", "crank_nicolson", "pmmh"]


class PMMHResult(NamedTuple):
    """Output of :func:`pmmh`.

    Attributes:
        samples: (C, S, d) kept draws of theta, per chain.
        loglik: (C, S) the likelihood estimate carried with each draw.
        accepted: (C, S) bool, whether the move to each draw was accepted.
        acceptance_rate: (C,) share of accepted moves after warm-up.
    """

    samples: jax.Array
    loglik: jax.Array
    accepted: jax.Array
    acceptance_rate: jax.Array


def crank_nicolson(u, e, rho):
    """``rho u + sqrt(1 - rho^2) e`` on every leaf of the pytrees ``u`` and ``e``.

    Example:
        >>> crank_nicolson(jnp.ones(2), jnp.zeros(2), 0.6).tolist()
        [0.6, 0.6]
    """
    return jax.tree.map(lambda a, b: rho * a + jnp.sqrt(1 - rho**2) * b, u, e)


def _chain(loglik_fn, log_prior, noise_fn, num_warmup, num_samples, key, theta0, chol, rho):
    k_init, k_run = jax.random.split(key)
    u0 = noise_fn(k_init)

    def log_target(theta, u):
        ll = loglik_fn(theta, u)
        lp = log_prior(theta)
        # A NaN (a broken proposal) counts as an impossible one.
        return jnp.where(jnp.isnan(ll), -jnp.inf, ll), jnp.where(jnp.isnan(lp), -jnp.inf, lp)

    def step(state, key):
        theta, u, ll, lp = state
        k_theta, k_u, k_acc = jax.random.split(key, 3)
        theta_new = theta + chol @ jax.random.normal(k_theta, theta.shape)
        u_new = crank_nicolson(u, noise_fn(k_u), rho)
        ll_new, lp_new = log_target(theta_new, u_new)
        log_ratio = ll_new + lp_new - ll - lp
        log_ratio = jnp.where(jnp.isnan(log_ratio), -jnp.inf, log_ratio)
        accept = jnp.log(jax.random.uniform(k_acc)) < log_ratio
        state = jax.tree.map(lambda new, old: jnp.where(accept, new, old),
                             (theta_new, u_new, ll_new, lp_new), state)
        return state, (state[0], state[2], accept)

    ll0, lp0 = log_target(theta0, u0)
    keys = jax.random.split(k_run, num_warmup + num_samples)
    _, (draws, ll, accepted) = jax.lax.scan(step, (theta0, u0, ll0, lp0), keys)
    return draws[num_warmup:], ll[num_warmup:], accepted[num_warmup:]


@partial(jax.jit, static_argnums=(0, 1, 2, 6, 7))
def _run(loglik_fn, log_prior, noise_fn, key, initial_positions, chol, num_warmup,
         num_samples, rho):
    chain = partial(_chain, loglik_fn, log_prior, noise_fn, num_warmup, num_samples)
    keys = jax.random.split(key, initial_positions.shape[0])
    draws, ll, accepted = jax.vmap(chain, (0, 0, None, None))(keys, initial_positions, chol, rho)
    return PMMHResult(draws, ll, accepted, jnp.mean(accepted, axis=1))


def pmmh(loglik_fn: Callable, log_prior: Callable, noise_fn: Callable, key, initial_positions,
         proposal_cov, *, num_samples: int = 1000, num_warmup: int = 0,
         rho: float = 0.0) -> PMMHResult:
    """Run C chains of (correlated) PMMH at once with ``jax.vmap``.

    Args:
        loglik_fn: ``loglik_fn(theta (d,), u) -> ()``, a log-likelihood
            estimate driven by the pytree ``u`` of standard normals (hashable:
            it is a static argument, so define it once, not in a loop).
        log_prior: ``log_prior(theta) -> ()``, the log prior density.
        noise_fn: ``noise_fn(key) -> u``, draws the standard normals.
        key: a ``jax.random`` key; chain c uses ``split(key, C)[c]``.
        initial_positions: (C, d) starting points.
        proposal_cov: (d, d) covariance of the random-walk step ``theta' - theta``.
        num_samples: kept draws S per chain.
        num_warmup: draws discarded first (no adaptation takes place).
        rho: the Crank-Nicolson correlation of ``u`` in [0, 1); 0 is standard PMMH.

    Returns:
        A :class:`PMMHResult`.

    Raises:
        ValueError: naming the argument, for wrong shapes, a proposal
            covariance that is not positive definite, ``rho`` outside [0, 1),
            or fewer than one draw.

    Example (the likelihood estimate is exact here, so PMMH is plain
    random-walk Metropolis on a standard normal):

    >>> run = pmmh(lambda th, u: -0.5 * th @ th, lambda th: 0.0,
    ...            lambda k: jax.random.normal(k, (3,)), jax.random.key(0),
    ...            jnp.zeros((2, 1)), jnp.eye(1), num_samples=2000, rho=0.9)
    >>> run.samples.shape, run.accepted.shape
    ((2, 2000, 1), (2, 2000))
    >>> bool(abs(run.samples.mean()) < 0.2), bool(abs(run.samples.std() - 1) < 0.2)
    (True, True)
    """
    initial_positions = as_float64("initial_positions", initial_positions)
    check_shape("initial_positions", initial_positions, (None, None))
    d = initial_positions.shape[1]
    proposal_cov = as_float64("proposal_cov", proposal_cov)
    check_shape("proposal_cov", proposal_cov, (d, d))
    try:
        chol = np.linalg.cholesky(np.asarray(proposal_cov))
    except np.linalg.LinAlgError:
        chol = None
    if chol is None or not np.allclose(proposal_cov, proposal_cov.T):
        raise ValueError("proposal_cov must be symmetric positive definite")
    for name, value, low in (("num_samples", num_samples, 1), ("num_warmup", num_warmup, 0)):
        if not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if np.ndim(rho) != 0 or not 0 <= float(rho) < 1:
        raise ValueError(f"rho must be a number in [0, 1), got {rho!r}")
    out = jax.eval_shape(loglik_fn, initial_positions[0], jax.eval_shape(noise_fn, key))
    if getattr(out, "shape", None) != ():
        raise ValueError(f"loglik_fn must return a scalar, got shape {getattr(out, 'shape', out)}")
    return _run(loglik_fn, log_prior, noise_fn, key, initial_positions, jnp.asarray(chol),
                int(num_warmup), int(num_samples), jnp.asarray(rho, jnp.float64))
