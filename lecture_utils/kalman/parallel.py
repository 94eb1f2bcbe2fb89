r"""The Kalman filter as a parallel scan (Särkkä and García-Fernández, 2021).

The sequential filter needs T steps one after the other. Särkkä and
García-Fernández write step t as an *element* that maps the filtered
distribution of :math:`x_t` to that of :math:`x_{t+1}` given ``y[t]``, in a
form that can be composed before :math:`x_t`'s distribution is known:

.. math::

    p(x_{t+1} \mid x_t, y_t) = N(x_{t+1};\, F_t x_t + b_t,\, C_t), \qquad
    p(y_t \mid x_t) \propto N_I(x_t;\, \eta_t, J_t),

where :math:`N_I` is a Gaussian in information form. Composing two elements is
associative, so all T prefixes can be computed with about 2T compositions
done in far fewer than T sequential rounds. :func:`blocked_scan` cuts the T
elements into about sqrt(T) blocks and needs about 2 sqrt(T) rounds, each a
vectorised batch of about sqrt(T) compositions. (``jax.lax.associative_scan``
needs only about 2 log2(T) rounds, but it traces the composition anew at each
level: with it this program took over a minute to compile at T = 10^5, and
about 3 s this way, whatever T.) Each composition solves N x N systems
where a sequential step does a few small products, so on a CPU this filter
is several times slower than the sequential one (see
``benchmarks/results/kalman.md``); the short span is for accelerators. The
first element conditions on the prior, so the scan's outputs are the
filtered moments themselves; innovations, gains and the log-likelihood then
follow for all t at once from the shared step functions of
:mod:`lecture_utils.kalman._steps`, exactly as in the sequential filter.

Missing entries of ``y`` (NaN) enter each element through the same masking
as the sequential filter's. Two differences from it: each element needs
``G CC' G' + HH'`` positive definite (checked eagerly by the validator; under
``jit`` a model without it gives ``-inf``), and a nonzero ``jitter`` scales
the diagonal of that matrix rather than of the filter's :math:`S_t`, so with
``jitter > 0`` the two methods differ by O(jitter); with ``jitter=0`` they
agree to rounding. A backend: it takes checked inputs with T >= 1.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from lecture_utils.kalman import _linalg as sl
from lecture_utils.kalman._steps import (
    condition_on,
    masked,
    noise_covariances,
    positive_definite,
    predict,
)
from lecture_utils.kalman.results import KalmanResult

__all__ = ["blocked_scan", "filter"]


def _element(y_t, model, Q, R, jitter):
    """Condition x_{t+1} ~ N(A x_t, Q) on the observed entries of y_t, as a function of x_t.

    Returns the element ``(F, b, C, eta, J)`` and whether its ``S`` was
    positive definite (where not, the identity stands in, so it stays finite).
    """
    A, _, G, _ = model
    N = A.shape[0]
    m, y_t, G_t, R_t = masked(y_t, G, R)
    S = sl.symmetrize(G_t @ Q @ G_t.T + R_t)
    S = S + jitter * sl.diag_matrix(m * sl.diagonal(S))  # relative to this S, not S_t
    ok = positive_definite(S)
    S = jnp.where(ok, S, jnp.eye(S.shape[0]))
    K = sl.solve(S, G_t @ Q).T  # (N, M)
    I_KG = jnp.eye(N) - K @ G_t
    S_inv_GA = sl.solve(S, G_t @ A)  # (M, N)
    element = (I_KG @ A, K @ y_t, sl.symmetrize(I_KG @ Q), S_inv_GA.T @ y_t,
               sl.symmetrize((G_t @ A).T @ S_inv_GA))
    return element, ok


def _combine(earlier, later):
    """Compose two elements (each unbatched): first ``earlier``, then ``later``."""
    F1, b1, C1, eta1, J1 = earlier
    F2, b2, C2, eta2, J2 = later
    I_CJ = jnp.eye(F1.shape[0]) + C1 @ J2
    # (I + C1 J2)^T = I + J2 C1, as C and J are symmetric.
    F2_W = sl.solve(I_CJ.T, F2.T).T  # F2 (I + C1 J2)^{-1}
    F1t_Wt = sl.solve(I_CJ, F1).T  # F1' (I + J2 C1)^{-1}
    F = F2_W @ F1
    b = F2_W @ (b1 + C1 @ eta2) + b2
    C = sl.symmetrize(F2_W @ C1 @ F2.T + C2)
    eta = F1t_Wt @ (eta2 - J2 @ b1) + eta1
    J = sl.symmetrize(F1t_Wt @ J2 @ F1 + J1)
    return F, b, C, eta, J


def _identity(N):
    """The neutral element: ``combine(identity, e) == combine(e, identity) == e``."""
    return jnp.eye(N), jnp.zeros(N), jnp.zeros((N, N)), jnp.zeros(N), jnp.zeros((N, N))


def blocked_scan(combine, elements, identity):
    """Inclusive scan of ``elements`` (leading axis T) under an associative ``combine``.

    ``combine`` takes two unbatched elements; it is vmapped here. The T
    elements are cut into about sqrt(T) blocks of about sqrt(T) (the last
    padded with the neutral ``identity``). A ``lax.scan`` runs along all
    blocks at once, a second along the block totals, and one vectorised
    ``combine`` joins each block's prefix to the total of the blocks before
    it: about 2T combinations, as ``lax.associative_scan``, in a span of
    about 2 sqrt(T) vectorised steps instead of about 2 log2(T). ``combine``
    is traced three times whatever T, where ``lax.associative_scan`` traces
    it at every level: compile time stays flat in T.
    """
    T = elements[0].shape[0]
    n_blocks = max(1, round(np.sqrt(T)))
    length = -(-T // n_blocks)
    pad = n_blocks * length - T
    blocks = [jnp.concatenate([x, jnp.broadcast_to(e, (pad,) + e.shape)]).reshape(
        (n_blocks, length) + x.shape[1:]) for x, e in zip(elements, identity)]
    combine_many = jax.vmap(combine)

    def along(carry, element):
        carry = combine_many(carry, element)
        return carry, carry

    start = tuple(jnp.broadcast_to(e, (n_blocks,) + e.shape) for e in identity)
    totals, prefixes = lax.scan(along, start, [jnp.swapaxes(x, 0, 1) for x in blocks])

    def before(carry, total):
        return combine(carry, total), carry

    _, offsets = lax.scan(before, identity, totals)
    # Every block's prefixes (length, n_blocks, ...) after its offset, all at once.
    flat_offsets = [jnp.broadcast_to(x[None], (length,) + x.shape).reshape((-1,) + x.shape[1:])
                    for x in offsets]
    flat_prefixes = [x.reshape((-1,) + x.shape[2:]) for x in prefixes]
    joined = combine_many(flat_offsets, flat_prefixes)
    return [jnp.swapaxes(x.reshape((length, n_blocks) + x.shape[1:]), 0, 1).reshape(
        (n_blocks * length,) + x.shape[1:])[:T] for x in joined]


@jax.jit
def filter(model, mu0, Sigma0, y, jitter) -> KalmanResult:  # noqa: A001 (the backend's verb)
    """The filter's log-likelihood and path by the blocked parallel scan (T >= 1).

    ``jitter`` is a numerical setting, not a parameter: its derivative is zero.
    """
    jitter = lax.stop_gradient(jitter)
    A, _, G, _ = model
    N = A.shape[0]
    Q, R = noise_covariances(model)
    Sigma0 = sl.symmetrize(Sigma0)
    elements, elements_ok = jax.vmap(_element, in_axes=(0, None, None, None, None))(
        y, model, Q, R, jitter)
    # The first element is the filter's first step from the prior: it no longer
    # depends on x_0 (F = 0, J = 0, eta = 0) and carries the filtered moments.
    # If that step fails (an indefinite prior), a covariance that is positive
    # semi-definite (Q) stands in, so that the compositions stay finite.
    first = condition_on(*predict(mu0, Sigma0, A, Q), y[0], G, R, jitter)
    zero = jnp.zeros((N, N))
    F, b, C, eta, J = elements
    elements = (F.at[0].set(zero), b.at[0].set(first.mu),
                C.at[0].set(jnp.where(first.ok, first.Sigma, Q)),
                eta.at[0].set(jnp.zeros(N)), J.at[0].set(zero))
    _, mu, Sigma, _, _ = blocked_scan(_combine, elements, _identity(N))
    mu = jnp.concatenate([mu0[None], mu])
    Sigma = jnp.concatenate([Sigma0[None], Sigma])

    def terms(mu_t, Sigma_t, y_t):
        """Step t's gain, innovation and likelihood, from the filtered moments at t."""
        u = condition_on(*predict(mu_t, Sigma_t, A, Q), y_t, G, R, jitter)
        return u.gain, u.innovation, u.innovation_cov, u.loglik, u.ok

    K, nu, S, ll, ok = jax.vmap(terms)(mu[:-1], Sigma[:-1], y)
    loglik = jnp.sum(ll)
    ok = jnp.all(ok) & jnp.all(elements_ok) & jnp.isfinite(loglik)
    return KalmanResult(jnp.where(ok, loglik, -jnp.inf), mu, Sigma, K, nu, S)
