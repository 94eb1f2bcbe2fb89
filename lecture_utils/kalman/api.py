"""The public entry points: validate once, then dispatch to a backend.

Every function here checks its arguments with the one validator
(:mod:`lecture_utils.kalman._checks`), calls a backend (:mod:`.sequential`,
:mod:`.parallel`, :mod:`.smoother`, :mod:`.sample`, :mod:`.batch`), which never calls back
into this module, and, when the result is concrete, turns a failed
factorisation into a ``ValueError``.

Failure semantics, the same everywhere: eager calls raise ``ValueError``
naming the culprit; under ``jit``/``grad``/``vmap`` values cannot be
inspected, and a failed factorisation gives ``loglik = -inf`` with a finite
(zero) gradient, never NaN; a failing member of a batch does not touch the
others (:func:`kalman_sample`, which returns no log-likelihood, returns NaN
draws instead). ``jitter`` is a numerical setting, not a parameter: its derivative is
zero in every entry point.
"""

from numbers import Integral

import jax
import numpy as np

from lecture_utils._validation import is_concrete
from lecture_utils.kalman import batch, parallel, sample, sequential, smoother
from lecture_utils.kalman._checks import check_batch_inputs, check_inputs, check_mesh
from lecture_utils.kalman.results import KalmanResult, SmootherResult
from lecture_utils.lss import LSSModel

__all__ = ["kalman_filter", "kalman_loglik", "kalman_loglik_batch", "kalman_loglik_sharded",
           "kalman_sample", "kalman_smoother"]


def _raise_if_failed(loglik, jitter):
    if is_concrete(loglik) and np.isneginf(np.asarray(loglik)):
        raise ValueError(
            "the innovation covariance S_t = G Sigma_hat G' + H H' is not positive definite "
            f"at some t (jitter = {float(jitter)}); check Sigma0, H and C, or raise jitter")


def _check_flag(name, value):
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")


def kalman_filter(model: LSSModel, mu0, Sigma0, y, *, jitter: float = 1e-8,
                  method: str = "sequential", steady_state: bool = True) -> KalmanResult:
    """Run the Kalman filter and return the log-likelihood and filtered moments.

    Args:
        model: ``LSSModel`` with A (N, N), C (N, K), G (M, N), H (M, L).
        mu0: (N,) prior mean of ``x_0``.
        Sigma0: (N, N) prior covariance of ``x_0`` (symmetrised).
        y: (T, M) observations; ``y[t]`` observes ``x_{t+1}``; NaN marks an
            entry that was not observed.
        jitter: relative regularisation, finite and >= 0: each observed
            diagonal entry of ``S_t`` is multiplied by ``1 + jitter`` before
            its Cholesky factorisation (rescaling a series does not change its
            effect); pass 0.0 for the exact filter. A setting, not a
            parameter: its derivative is zero.
        method: ``"sequential"``, a ``lax.scan`` over t; or ``"parallel"``,
            the blocked parallel scan of :mod:`lecture_utils.kalman.parallel`
            (about 2 sqrt(T) sequential rounds of vectorised work instead of
            T; slower on a CPU, for accelerators). Same results for
            ``jitter=0``; it needs ``G CC' G' + HH'`` positive definite.
        steady_state: once a step leaves the filtered covariance unchanged to
            rounding, run only the mean recursion for the following fully
            observed rows (a row with a missing entry runs the full step, and
            the test starts again), as statsmodels does by default. Results
            equal the full recursion's to rounding; ``False`` runs the full
            recursion throughout. Ignored by ``method="parallel"``. Under
            ``vmap`` the switch becomes a select that runs both branches: pass
            ``False`` there.

    Returns:
        A :class:`~lecture_utils.kalman.KalmanResult`.

    Raises:
        ValueError: on wrong shapes; on NaN or infinite entries of the model,
            ``mu0`` or ``Sigma0``, infinite entries of ``y``, a ``Sigma0``
            that is not symmetric positive semi-definite, or a negative or
            non-finite ``jitter`` (checked when the inputs are concrete); and
            when some ``S_t`` is not positive definite. Under
            ``jit``/``grad``/``vmap`` a non-positive-definite ``S_t`` gives
            ``loglik = -inf`` with a finite gradient, never NaN.
    """
    model, mu0, Sigma0, y, jitter, _ = check_inputs(model, mu0, Sigma0, y, jitter, method)
    _check_flag("steady_state", steady_state)
    if method == "parallel" and y.shape[0] > 0:
        result = parallel.filter(model, mu0, Sigma0, y, jitter)
    else:
        result = sequential.filter(model, mu0, Sigma0, y, jitter, steady_state)
    _raise_if_failed(result.loglik, jitter)
    return result


def kalman_loglik(model: LSSModel, mu0, Sigma0, y, *, jitter: float = 1e-8,
                  steady_state: bool = True) -> jax.Array:
    """The log-likelihood of :func:`kalman_filter`, with a hand-derived reverse rule.

    The value is computed without storing the path (scratch memory does not
    grow with T). Its gradient (``jax.grad``, ``jax.vjp``) runs the adjoint of
    the filter backwards in time (:mod:`lecture_utils.kalman.adjoint`) instead
    of reading back autodiff's record of every operation: about the cost of a
    second filter. Second derivatives differentiate that rule again:
    ``jax.hessian`` (forward mode over the reverse rule) and
    ``jax.jacrev(jax.grad(f))`` (reverse over reverse) both work and agree.
    Forward mode through the function itself is refused (it is a
    ``jax.custom_vjp``): ``jax.jvp`` and ``jax.jacfwd`` of it raise; use
    :func:`kalman_filter`'s ``loglik`` for those.

    Args and Raises: as :func:`kalman_filter` (no ``method``). With
    ``steady_state`` the reverse rule still runs the full adjoint recursion.

    Returns:
        () log-likelihood; ``-inf`` with a zero gradient where some ``S_t`` is
        not positive definite under ``jit``/``grad``/``vmap``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> model = LSSModel(jnp.eye(1) * 0.9, jnp.eye(1), jnp.eye(1), jnp.eye(1))
        >>> y = jnp.array([[0.5], [jnp.nan], [-0.2]])
        >>> ll = kalman_loglik(model, jnp.zeros(1), jnp.eye(1), y)
        >>> bool(jnp.isclose(ll, kalman_filter(model, jnp.zeros(1), jnp.eye(1), y).loglik))
        True
    """
    model, mu0, Sigma0, y, jitter, _ = check_inputs(model, mu0, Sigma0, y, jitter)
    _check_flag("steady_state", steady_state)
    loglik = sequential.loglik(model, mu0, Sigma0, y, jitter, steady_state)
    _raise_if_failed(loglik, jitter)
    return loglik


def kalman_smoother(model: LSSModel, mu0, Sigma0, y, *, jitter: float = 1e-8,
                    steady_state: bool = True) -> SmootherResult:
    """Moments of every state given all observations.

    Computed from the adjoint recursion of :func:`kalman_loglik` (the
    derivatives of the log-likelihood with respect to each predicted mean and
    covariance): the (r, N) smoother of Bryson and Frazier, as written by
    Durbin and Koopman (2012, sec. 4.4), not the Rauch-Tung-Striebel form. It
    never inverts a predicted covariance: singular state noise and exactly
    observed states are fine. Differentiable (by autodiff).

    Args and Raises: as :func:`kalman_filter`.

    Returns:
        A :class:`~lecture_utils.kalman.SmootherResult`; row 0 is ``x_0``, the
        last row equals the filter's.
    """
    model, mu0, Sigma0, y, jitter, _ = check_inputs(model, mu0, Sigma0, y, jitter)
    _check_flag("steady_state", steady_state)
    result = smoother.smoother(model, mu0, Sigma0, y, jitter, steady_state)
    _raise_if_failed(result.loglik, jitter)
    return result


def _check_key(key):
    """One JAX random key as a typed key: a typed key of shape () (``jax.random.key``)
    passes, a legacy uint32 key of shape (2,) (``jax.random.PRNGKey``) is wrapped (the
    same draws), anything else is refused."""
    dtype, shape = getattr(key, "dtype", None), np.shape(key)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        if shape != ():
            raise ValueError(f"key must be one random key (shape ()), got shape {shape}; "
                             "for several keys, jax.vmap over them")
        return key
    if dtype == np.uint32 and shape == (2,):
        return jax.random.wrap_key_data(key)
    raise ValueError("key must be a JAX random key such as jax.random.key(0), got "
                     f"{type(key).__name__} with dtype {dtype} and shape {shape}")


def kalman_sample(key, model: LSSModel, mu0, Sigma0, y, *, num_samples: int = 1,
                  jitter: float = 1e-8) -> jax.Array:
    r"""Joint draws of the states x_0, ..., x_T given the data: a simulation smoother.

    Draws from the Gaussian conditional of :math:`X = (x_0, \dots, x_T)` given
    the observed entries of ``y`` (the model and timing of
    :func:`kalman_filter`: :math:`x_0 \sim N(\mu_0, \Sigma_0)`,
    :math:`x_{t+1} = A x_t + C w_{t+1}`, ``y[t]`` :math:`= G x_{t+1} + H v_{t+1}`),
    by the method of Durbin and Koopman (2002): draw an unconditional path
    :math:`X^+, Y^+` from the model, with the entries missing in ``y`` blanked
    out of :math:`Y^+`, and return

    .. math::

        \tilde X = X^+ - E[X^+ \mid Y^+] + E[X \mid Y]
        \sim N(E[X \mid Y], \operatorname{Cov}[X \mid Y]),

    with both conditional means from :func:`kalman_smoother`'s recursion
    (:mod:`lecture_utils.kalman.sample`). Each draw is a whole path: unlike
    independent draws from the smoothed marginals ``N(mu_t, Sigma_t)``, it has
    the right covariances across dates, which statements about a path (its
    minimum, its sign over several quarters) need. The state shocks may be
    fewer than the states (singular ``CC'``) and ``H`` may be zero. ``x_0``
    is drawn as :math:`\mu_0 + U \Lambda_+^{1/2} z` from the
    eigendecomposition :math:`\Sigma_0 = U \Lambda U^\top` (eigenvalues at
    rounding level, below N machine epsilons of the largest, set to zero),
    which is exact for a singular ``Sigma0`` and keeps ``x_0`` in its range;
    its derivative is undefined where ``Sigma0`` has repeated eigenvalues
    (as the trend-cycle prior has: ``jax.grad`` returns NaN there), so the
    draws are not meant to be differentiated with respect to ``Sigma0``;
    with respect to the model they can be.

    All ``num_samples`` draws are computed in one batched pass. Works under
    ``jax.jit`` and ``jax.vmap``: over keys (``in_axes=(0, None, ...)``) and
    over stacked models, priors or data (for example a model built from each
    posterior draw of the parameters).

    Args:
        key: one JAX random key, ``jax.random.key(seed)`` (shape ()) or a
            legacy ``jax.random.PRNGKey(seed)`` (shape (2,)). The same key
            gives the same draws.
        model: ``LSSModel`` with A (N, N), C (N, K), G (M, N), H (M, L).
        mu0: (N,) prior mean of ``x_0``.
        Sigma0: (N, N) prior covariance of ``x_0``, positive semi-definite.
        y: (T, M) observations; ``y[t]`` observes ``x_{t+1}``; NaN marks an
            entry that was not observed (single entries or whole rows).
        num_samples: number of draws S, a positive int (static under ``jit``).
        jitter: as in :func:`kalman_filter` (relative regularisation of each
            ``S_t``; 0.0 for the exact conditional).

    Returns:
        (S, T + 1, N) draws; ``draws[s, t]`` is a draw of ``x_t``, row 0 is
        ``x_0``. Where some ``S_t`` is not positive definite (or, under
        ``jit``/``vmap``, ``Sigma0`` is not positive semi-definite) every
        draw of that model is NaN; other members of a ``vmap`` are untouched.

    Raises:
        ValueError: on a ``key`` that is not one random key, a
            ``num_samples`` that is not a positive int, and everything
            :func:`kalman_filter` refuses (wrong shapes, non-finite model or
            prior, a ``Sigma0`` that is not positive semi-definite, a bad
            ``jitter``); and, eagerly, when some ``S_t`` is not positive
            definite.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> model = LSSModel(jnp.eye(1) * 0.9, jnp.eye(1), jnp.eye(1), jnp.eye(1))
        >>> y = jnp.array([[0.5], [jnp.nan], [-0.2]])
        >>> draws = kalman_sample(jax.random.key(0), model, jnp.zeros(1), jnp.eye(1), y,
        ...                       num_samples=4000)
        >>> draws.shape
        (4000, 4, 1)
        >>> smoothed = kalman_smoother(model, jnp.zeros(1), jnp.eye(1), y).mu
        >>> bool(jnp.all(jnp.abs(draws.mean(axis=0) - smoothed) < 0.05))
        True
    """
    key = _check_key(key)
    if isinstance(num_samples, bool) or not isinstance(num_samples, Integral) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    model, mu0, Sigma0, y, jitter, _ = check_inputs(model, mu0, Sigma0, y, jitter)
    draws, loglik = sample.sample(key, model, mu0, Sigma0, y, jitter, int(num_samples))
    _raise_if_failed(loglik, jitter)
    return draws


def kalman_loglik_batch(models: LSSModel, mu0, Sigma0, y, *, jitter: float = 1e-8,
                        chunk: int | None = None) -> jax.Array:
    """Log-likelihoods of B parameter sets, computed together.

    Args:
        models: ``LSSModel`` whose matrices carry a leading batch axis:
            A (B, N, N), C (B, N, K), G (B, M, N), H (B, M, L).
        mu0: (N,) shared or (B, N) prior means.
        Sigma0: (N, N) shared or (B, N, N) prior covariances.
        y: (T, M) shared observations or (B, T, M), one series per model.
        jitter: as in :func:`kalman_filter`.
        chunk: models processed together; default
            :func:`lecture_utils.kalman.batch.default_chunk` (100 on a CPU,
            the whole batch on an accelerator).

    Returns:
        (B,) log-likelihoods, equal to ``kalman_filter(...).loglik`` for each
        model, missing entries (NaN in ``y``) included. Where some ``S_t`` of a
        model is not positive definite, its entry is ``-inf`` with a zero
        gradient and the others are unaffected (no error is raised, so that
        one bad point of a grid does not stop the rest). Differentiable, and
        usable under ``jit``. Models with M > 6 are run by ``jax.vmap`` of
        the sequential filter.

    Raises:
        ValueError: as :func:`kalman_filter`'s validator: wrong shapes,
            non-finite model or prior, infinite observations, a prior
            covariance that is not positive semi-definite, a bad ``jitter``
            or ``chunk``.
    """
    models, mu0, Sigma0, y, jitter, _ = check_batch_inputs(models, mu0, Sigma0, y, jitter)
    if chunk is not None and (not isinstance(chunk, int) or chunk < 1):
        raise ValueError(f"chunk must be a positive int or None, got {chunk!r}")
    return batch.loglik_batch(models, mu0, Sigma0, y, jitter, chunk)


def kalman_loglik_sharded(models: LSSModel, mu0, Sigma0, y, *, jitter: float = 1e-8,
                          mesh: jax.sharding.Mesh | None = None) -> jax.Array:
    """:func:`kalman_loglik_batch` with the batch split over the devices of ``mesh``.

    ``mesh`` defaults to a one-axis mesh over all ``jax.devices()``. B need not
    divide by the device count: the batch is padded with copies of its first
    model, whose results are dropped. The same call uses all GPUs of a
    multi-GPU machine, or several CPU devices made with
    ``XLA_FLAGS=--xla_force_host_platform_device_count=n``.

    Returns:
        (B,) log-likelihoods.

    Raises:
        ValueError: as :func:`kalman_loglik_batch`, or a mesh with other than one axis.
    """
    models, mu0, Sigma0, y, jitter, _ = check_batch_inputs(models, mu0, Sigma0, y, jitter)
    check_mesh(mesh)
    return batch.loglik_sharded(models, mu0, Sigma0, y, jitter, mesh)

