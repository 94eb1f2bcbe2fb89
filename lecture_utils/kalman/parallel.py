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

For N <= 6 the N x N solves are unrolled elimination (``_linalg.solve``)
rather than LAPACK calls: faster here, and with jaxlib 0.10.2 the LAPACK
version of this program sometimes stalled XLA:CPU's runtime for good (every
thread idle) at T >= 4,000.
"""

import jax
import jax.numpy as jnp
from jax import lax

from lecture_utils.kalman import _linalg as sl
from lecture_utils.kalman._steps import condition_on, predict


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
    Q = C @ C.T
    R = H @ H.T + jitter * jnp.eye(M)  # the sequential filter's jitter, exactly
    # Generic element: condition x_{t+1} ~ N(A x_t, Q) on y_t as a function of x_t.
    S = _sym(G @ Q @ G.T + R)
    K = jnp.linalg.solve(S, G @ Q).T  # (N, M)
    I_KG = jnp.eye(N) - K @ G
    GA = G @ A
    S_inv_GA = jnp.linalg.solve(S, GA)  # (M, N)
    T = y.shape[0]
    F = jnp.broadcast_to(I_KG @ A, (T, N, N))
    b = y @ K.T  # (T, N)
    Cov = jnp.broadcast_to(_sym(I_KG @ Q), (T, N, N))
    eta = y @ S_inv_GA  # (T, N): A' G' S^{-1} y_t
    J = jnp.broadcast_to(_sym(GA.T @ S_inv_GA), (T, N, N))
    # The first element is the filter's first step from the prior: it no longer
    # depends on x_0 (F = 0, J = 0, eta = 0) and carries the filtered moments.
    mu_hat, Sigma_hat = predict(mu0, Sigma0, A, Q)
    mu1, Sigma1, *_ = condition_on(mu_hat, Sigma_hat, y[0], G, H @ H.T, jitter)
    zero = jnp.zeros((N, N))
    return (F.at[0].set(zero), b.at[0].set(mu1), Cov.at[0].set(Sigma1),
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
    _, mu, Sigma, _, _ = lax.associative_scan(_combine, _elements(model, mu0, Sigma0, y, jitter))
    mu = jnp.concatenate([mu0[None], mu])
    Sigma = jnp.concatenate([Sigma0[None], Sigma])

    def terms(mu_t, Sigma_t, y_t):
        """Step t's gain, innovation and likelihood, from the filtered moments at t."""
        mu_hat, Sigma_hat = predict(mu_t, Sigma_t, A, C @ C.T)
        _, _, K, nu, S, ll = condition_on(mu_hat, Sigma_hat, y_t, G, H @ H.T, jitter)
        return K, nu, S, ll

    K, nu, S, ll = jax.vmap(terms)(mu[:-1], Sigma[:-1], y)
    loglik = jnp.sum(ll)
    return jnp.where(jnp.isnan(loglik), -jnp.inf, loglik), mu, Sigma, K, nu, S
