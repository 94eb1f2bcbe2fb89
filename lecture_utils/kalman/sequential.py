r"""A differentiable Kalman filter for the linear state-space model.

The model is the one of :class:`lecture_utils.simulation.LSSModel`,

.. math::

    x_{t+1} = A x_t + C w_{t+1}, \qquad y_{t+1} = G x_{t+1} + H v_{t+1},
    \qquad x_0 \sim N(\mu_0, \Sigma_0),

and row ``y[t]`` of the data is the observation of :math:`x_{t+1}`. Starting
from :math:`\mu_0, \Sigma_0`, each step predicts, then conditions on ``y[t]``:

.. math::

    \hat\mu_t = A \mu_t, \quad \hat\Sigma_t = A \Sigma_t A^\top + C C^\top,
    \quad \nu_t = y_t - G \hat\mu_t, \quad S_t = G \hat\Sigma_t G^\top + H H^\top,

    K_t = \hat\Sigma_t G^\top S_t^{-1}, \quad \mu_{t+1} = \hat\mu_t + K_t \nu_t,
    \quad \Sigma_{t+1} = \hat\Sigma_t - K_t G \hat\Sigma_t,

and the log-likelihood is
:math:`\sum_t -\tfrac12 (M \log 2\pi + \log|S_t| + \nu_t^\top S_t^{-1} \nu_t)`.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from lecture_utils.kalman import _linalg as sl
from lecture_utils.kalman._steps import LOG_2PI, condition_on, predict
from lecture_utils._validation import as_float64, check_shape, is_concrete
from lecture_utils.kalman.parallel import kalman_filter_parallel
from lecture_utils.simulation import LSSModel, check_lss_model


class KalmanResult(NamedTuple):
    """Output of :func:`kalman_filter`.

    Attributes:
        loglik: () log-likelihood of all observations; ``-inf`` if some
            innovation covariance was not positive definite (see
            :func:`kalman_filter`).
        mu: (T + 1, N) filtered means, ``mu[0] = mu0``.
        Sigma: (T + 1, N, N) filtered covariances, ``Sigma[0] = Sigma0``.
        gain: (T, N, M) Kalman gains ``K_t``.
        innovation: (T, M) innovations ``nu_t = y[t] - G A mu[t]``.
        innovation_cov: (T, M, M) innovation covariances ``S_t``.
    """

    loglik: jax.Array
    mu: jax.Array
    Sigma: jax.Array
    gain: jax.Array
    innovation: jax.Array
    innovation_cov: jax.Array


@jax.jit
def _kalman_filter(model, mu0, Sigma0, y, jitter):
    A, C, G, H = model
    Q, R = sl.matmul(C, sl.transpose(C)), sl.matmul(H, sl.transpose(H))

    def step(carry, y_t):
        """carry = (mu_t, Sigma_t), the filtered moments given y[:t]."""
        mu, Sigma = carry
        mu_hat, Sigma_hat = predict(mu, Sigma, A, Q)
        mu, Sigma, K, nu, S, ll = condition_on(mu_hat, Sigma_hat, y_t, G, R, jitter)
        return (mu, Sigma), (mu, Sigma, K, nu, S, ll)

    _, (mu, Sigma, K, nu, S, ll) = lax.scan(step, (mu0, Sigma0), y)
    loglik = jnp.sum(ll)
    # A failed Cholesky leaves NaN in ll; report an impossible model instead.
    loglik = jnp.where(jnp.isnan(loglik), -jnp.inf, loglik)
    return KalmanResult(
        loglik=loglik,
        mu=jnp.concatenate([mu0[None], mu]),
        Sigma=jnp.concatenate([Sigma0[None], Sigma]),
        gain=K,
        innovation=nu,
        innovation_cov=S,
    )


METHODS = ("sequential", "parallel")


def kalman_filter(model: LSSModel, mu0, Sigma0, y, *, jitter: float = 1e-8,
                  method: str = "sequential") -> KalmanResult:
    """Run the Kalman filter and return the log-likelihood and filtered moments.

    Args:
        model: ``LSSModel`` with A (N, N), C (N, K), G (M, N), H (M, L).
        mu0: (N,) prior mean of ``x_0``.
        Sigma0: (N, N) prior covariance of ``x_0``.
        y: (T, M) observations; ``y[t]`` observes ``x_{t+1}``.
        jitter: added to the diagonal of each (symmetrised) ``S_t`` before
            its Cholesky factorisation; pass 0.0 for the exact filter.
        method: ``"sequential"``, a ``lax.scan`` over t; or ``"parallel"``,
            the associative scan of :mod:`lecture_utils.kalman.parallel`
            (span O(log T) on an accelerator; slower on a CPU). Same results.

    Returns:
        A :class:`KalmanResult`.

    Raises:
        ValueError: on wrong shapes; on NaN or infinite observations or a
            ``Sigma0`` that is not symmetric positive semi-definite (checked
            when the inputs are concrete); and when some ``S_t`` is not positive
            definite. Under ``jit``/``grad``/``vmap`` values cannot be
            inspected: there a non-positive-definite ``S_t`` gives
            ``loglik = -inf`` (never NaN), which optimisers treat as a
            rejected step.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    model, (N, _, M, _) = check_lss_model(model)
    mu0 = as_float64("mu0", mu0)
    check_shape("mu0", mu0, (N,))
    Sigma0 = as_float64("Sigma0", Sigma0)
    check_shape("Sigma0", Sigma0, (N, N))
    y = as_float64("y", y)
    check_shape("y", y, (None, M))
    if is_concrete(y):
        bad = np.flatnonzero(~np.all(np.isfinite(np.asarray(y)), axis=1))
        if bad.size:
            raise ValueError(f"y has NaN or infinite entries in rows {bad[:10].tolist()}")
    if is_concrete(Sigma0):
        S0 = np.asarray(Sigma0)
        if not np.allclose(S0, S0.T) or np.linalg.eigvalsh(0.5 * (S0 + S0.T)).min() < -1e-12:
            raise ValueError("Sigma0 must be symmetric positive semi-definite")
    if method == "parallel" and y.shape[0] > 0:
        result = KalmanResult(*kalman_filter_parallel(model, mu0, Sigma0, y, jitter))
    else:
        result = _kalman_filter(model, mu0, Sigma0, y, jitter)
    if is_concrete(result.loglik) and not np.isfinite(result.loglik):
        finite = np.all(np.isfinite(np.asarray(result.gain)), axis=(1, 2))
        t = int(np.argmin(finite)) if not finite.all() else None
        raise ValueError(
            "the innovation covariance S_t = G Sigma_hat G' + H H' is not positive "
            f"definite (first at t = {t}); check H, or raise jitter (now {jitter})"
        )
    return result
