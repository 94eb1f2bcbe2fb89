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
needs only 2 log2(T) rounds, but it traces the composition anew at each
level: with it this program took over a minute to compile at T = 10^5, and
about 3 s this way, whatever T.) Each composition solves N x N systems
where a sequential step does a few small products, so on a CPU this filter
is several times slower than the sequential one (see
``benchmarks/results/kalman.md``); the short span is for accelerators. The
first element conditions on the prior, so the scan's outputs are the
filtered moments themselves; innovations, gains and the log-likelihood then
follow for all t at once from the shared step functions of
:mod:`lecture_utils.kalman._steps`, exactly as in the sequential filter.
The N x N solves are :func:`lecture_utils.kalman._linalg.solve`, small
loops with no LAPACK call.

Missing entries of ``y`` (NaN) enter each element through the same masking
as the sequential filter's. Two differences from it: each element needs
``G CC' G' + HH'`` positive definite (:func:`check_parallel_model`), and a
nonzero ``jitter`` scales the diagonal of that matrix rather than of the
filter's :math:`S_t`, so with ``jitter > 0`` the two methods differ by
O(jitter); with ``jitter=0`` they agree to rounding.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from lecture_utils.kalman import _linalg as sl
from lecture_utils.kalman._steps import condition_on, masked, predict


def _mT(X):
    return jnp.swapaxes(X, -1, -2)


def _sym(X):
    return 0.5 * (X + _mT(X))


def _mv(A, x):
    """Batched matrix-vector product: (..., n, k) and (..., k) -> (..., n)."""
    return (A @ x[..., None])[..., 0]


def _elements(model, mu0, Sigma0, y, jitter):
    """The T scan elements (F, b, C, eta, J), each with a leading time axis."""
    A, C, G, H = model
    N, M = A.shape[0], G.shape[0]
    Q, R = C @ C.T, H @ H.T
    solve = sl.solve

    def element(y_t):
        """Condition x_{t+1} ~ N(A x_t, Q) on the observed entries of y_t, as a function of x_t."""
        m, y_t, G_t, R_t = masked(y_t, G, R)
        S = _sym(G_t @ Q @ G_t.T + R_t)
        S = S + jitter * jnp.diag(m * jnp.diag(S))  # relative to this S, not the filter's S_t
        K = solve(S, G_t @ Q).T  # (N, M)
        I_KG = jnp.eye(N) - K @ G_t
        S_inv_GA = solve(S, G_t @ A)  # (M, N)
        return (I_KG @ A, K @ y_t, _sym(I_KG @ Q), S_inv_GA.T @ y_t,
                _sym((G_t @ A).T @ S_inv_GA))

    F, b, Cov, eta, J = jax.vmap(element)(y)
    # The first element is the filter's first step from the prior: it no longer
    # depends on x_0 (F = 0, J = 0, eta = 0) and carries the filtered moments.
    mu_hat, Sigma_hat = predict(mu0, Sigma0, A, Q)
    first = condition_on(mu_hat, Sigma_hat, y[0], G, R, jitter)
    zero = jnp.zeros((N, N))
    return (F.at[0].set(zero), b.at[0].set(first.mu), Cov.at[0].set(first.Sigma),
            eta.at[0].set(jnp.zeros(N)), J.at[0].set(zero))


def _combine(earlier, later):
    """Compose two batches of elements: first ``earlier``, then ``later``."""
    F1, b1, C1, eta1, J1 = earlier
    F2, b2, C2, eta2, J2 = later
    N = F1.shape[-1]
    solve = sl.solve
    I_CJ = jnp.eye(N) + C1 @ J2
    # (I + C1 J2)^T = I + J2 C1, as C and J are symmetric.
    F2_W = _mT(solve(_mT(I_CJ), _mT(F2)))  # F2 (I + C1 J2)^{-1}
    F1t_Wt = _mT(solve(I_CJ, F1))  # F1' (I + J2 C1)^{-1}
    F = F2_W @ F1
    b = _mv(F2_W, b1 + _mv(C1, eta2)) + b2
    C = _sym(F2_W @ C1 @ _mT(F2) + C2)
    eta = _mv(F1t_Wt, eta2 - _mv(J2, b1)) + eta1
    J = _sym(F1t_Wt @ J2 @ F1 + J1)
    return F, b, C, eta, J


def _identity(elements):
    """The neutral element: ``combine(identity, e) == combine(e, identity) == e``."""
    F, b, C, eta, J = (x[0] for x in elements)
    return jnp.eye(F.shape[-1]), jnp.zeros_like(b), jnp.zeros_like(C), jnp.zeros_like(eta), \
        jnp.zeros_like(J)


def blocked_scan(combine, elements):
    """Inclusive scan of ``elements`` (leading axis T) under an associative ``combine``.

    The T elements are cut into about sqrt(T) blocks of about sqrt(T) (the
    last padded with the neutral element). A ``lax.scan`` runs along all
    blocks at once, a second along the block totals, and one vectorised
    ``combine`` joins each block's prefix to the total of the blocks before
    it: about 2T combinations, as ``lax.associative_scan``, in a span of about
    2 sqrt(T) vectorised steps instead of 2 log2(T). ``combine`` is traced
    three times whatever T, where ``lax.associative_scan`` traces it at every
    level: compile time stays flat in T.
    """
    T = elements[0].shape[0]
    n_blocks = max(1, round(np.sqrt(T)))
    length = -(-T // n_blocks)
    identity = _identity(elements)
    pad = n_blocks * length - T
    blocks = [jnp.concatenate([x, jnp.broadcast_to(e, (pad,) + e.shape)]).reshape(
        (n_blocks, length) + x.shape[1:]) for x, e in zip(elements, identity)]

    def along(carry, element):
        carry = combine(carry, element)
        return carry, carry

    start = tuple(jnp.broadcast_to(e, (n_blocks,) + e.shape) for e in identity)
    totals, prefixes = lax.scan(along, start, [jnp.swapaxes(x, 0, 1) for x in blocks])

    def before(carry, total):
        return combine(carry, total), carry

    _, offsets = lax.scan(before, identity, totals)
    joined = combine(*(tuple(jnp.broadcast_to(x[:, None], (n_blocks, length) + x.shape[1:])
                             for x in offsets),
                       tuple(jnp.swapaxes(x, 0, 1) for x in prefixes)))
    return [x.reshape((n_blocks * length,) + x.shape[2:])[:T] for x in joined]


@jax.jit
def kalman_filter_parallel(model, mu0, Sigma0, y, jitter):
    """The filter's outputs, in :class:`~lecture_utils.kalman.KalmanResult`'s order.

    Takes checked inputs with T >= 1; use ``kalman_filter(..., method="parallel")``.
    """
    A, C, G, H = model
    Sigma0 = _sym(Sigma0)
    _, mu, Sigma, _, _ = blocked_scan(_combine, _elements(model, mu0, Sigma0, y, jitter))
    mu = jnp.concatenate([mu0[None], mu])
    Sigma = jnp.concatenate([Sigma0[None], Sigma])

    def terms(mu_t, Sigma_t, y_t):
        """Step t's gain, innovation and likelihood, from the filtered moments at t."""
        mu_hat, Sigma_hat = predict(mu_t, Sigma_t, A, C @ C.T)
        u = condition_on(mu_hat, Sigma_hat, y_t, G, H @ H.T, jitter)
        return u.gain, u.innovation, u.innovation_cov, u.loglik, u.ok

    K, nu, S, ll, ok = jax.vmap(terms)(mu[:-1], Sigma[:-1], y)
    loglik = jnp.sum(ll)
    ok = jnp.all(ok) & jnp.isfinite(loglik)
    return jnp.where(ok, loglik, -jnp.inf), mu, Sigma, K, nu, S


def check_parallel_model(model):
    """Refuse (eagerly) a model whose generic scan element is undefined.

    Each element conditions ``x_{t+1} ~ N(A x_t, CC')`` on ``y_t`` *before*
    the distribution of ``x_t`` is known, which needs ``G CC' G' + HH'``
    positive definite: every observed series must be moved by the state
    shocks or carry measurement error. The sequential filter needs only the
    ``S_t``, which also include the uncertainty about ``x_t``.
    """
    A, C, G, H = (np.asarray(m) for m in model)
    S = G @ C @ C.T @ G.T + H @ H.T
    eig = np.linalg.eigvalsh(0.5 * (S + S.T))
    if eig.min() <= 1e-12 * max(eig.max(), np.finfo(float).tiny):
        raise ValueError(
            "method='parallel' needs G C C' G' + H H' positive definite (each observed "
            "series moved by the state shocks or measured with error); here it is singular "
            f"(eigenvalues {eig.min():.3g} to {eig.max():.3g}). Use method='sequential'.")
