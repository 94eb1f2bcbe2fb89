r"""The Kalman filter as an associative scan (Särkkä and García-Fernández, 2021).

The sequential filter needs T steps one after the other. Särkkä and
García-Fernández write step t as an *element* that maps the filtered
distribution of :math:`x_t` to that of :math:`x_{t+1}` given ``y[t]``, in a
form that can be composed before :math:`x_t`'s distribution is known:

.. math::

    p(x_{t+1} \mid x_t, y_t) = N(x_{t+1};\, F_t x_t + b_t,\, C_t), \qquad
    p(y_t \mid x_t) \propto N_I(x_t;\, \eta_t, J_t),

where :math:`N_I` is a Gaussian in information form. Composing two elements is
associative, so ``jax.lax.associative_scan`` combines all T of them in
O(log T) rounds of independent work: span O(log T) on an accelerator, but
several times the arithmetic of the sequential filter (each combination
solves N x N systems), so on a CPU it is slower (see
``benchmarks/results/kalman.md``). The first element conditions on the prior,
so the scan's outputs are the filtered moments themselves; innovations, gains and the
log-likelihood then follow for all t at once from the shared step functions of
:mod:`lecture_utils.kalman._steps`, exactly as in the sequential filter.

Missing entries of ``y`` (NaN) enter each element through the same masking
as the sequential filter's. Two differences from it: each element needs
``G CC' G' + HH'`` positive definite (:func:`check_parallel_model`), and a
nonzero ``jitter`` scales the diagonal of that matrix rather than of the
filter's :math:`S_t`, so with ``jitter > 0`` the two methods differ by
O(jitter); with ``jitter=0`` they agree to rounding.

For N <= 6 the N x N solves are unrolled elimination (``_linalg.solve``)
rather than LAPACK calls: faster here, and with jaxlib 0.10.2 the LAPACK
version of this program sometimes stalled XLA:CPU's runtime for good (every
thread idle) at T >= 4,000.
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
    solve = sl.solve if M <= sl.MAX_UNROLLED_M else jnp.linalg.solve

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
    solve = sl.solve if N <= sl.MAX_UNROLLED_M else jnp.linalg.solve
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


@jax.jit
def kalman_filter_parallel(model, mu0, Sigma0, y, jitter):
    """The filter's outputs, in :class:`~lecture_utils.kalman.KalmanResult`'s order.

    Takes checked inputs with T >= 1; use ``kalman_filter(..., method="parallel")``.
    """
    A, C, G, H = model
    Sigma0 = _sym(Sigma0)
    _, mu, Sigma, _, _ = lax.associative_scan(_combine, _elements(model, mu0, Sigma0, y, jitter))
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
