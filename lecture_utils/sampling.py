r"""NUTS for any differentiable log density, and the ArviZ summary of its draws.

This module has one job: draw from a posterior whose unnormalised log density
is a pure JAX function of a vector, and hand the draws to ArviZ. It knows
nothing about the model: lecture 4 samples the trend-cycle posterior with it,
lecture 5 a New Keynesian one.

* :func:`nuts_chain` runs one chain: BlackJAX's NUTS after Stan-style window
  adaptation of the step size and of a dense or diagonal mass matrix.
* :func:`run_nuts` runs several chains at once under ``jax.vmap`` and counts
  gradient evaluations and divergences (a :class:`NUTSRun`).
* :func:`to_inference_data` turns draws of shape ``(C, S, d)`` into an ArviZ
  ``InferenceData``, optionally mapped to natural parameters first, and
  :func:`summary` gives ArviZ's table (means, MCSE, bulk and tail ESS,
  R-hat) with one row per parameter, in order: the one summary the lectures,
  the tests and the benchmarks compute.

Shapes: ``C`` chains, ``S`` kept draws per chain, ``W`` warm-up steps, ``d``
coordinates of the log density.

BlackJAX and ArviZ are imported inside the functions that use them (they come
with the ``lectures`` extra), so ``import lecture_utils.sampling`` needs only
jax, numpy and scipy.
"""

import warnings
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lecture_utils._validation import check_shape

__all__ = ["NUTSRun", "nuts_chain", "run_nuts", "to_inference_data", "summary"]


class NUTSRun(NamedTuple):
    """Output of :func:`run_nuts`.

    Attributes:
        samples: (C, S, d) draws in the coordinates of the log density.
        grad_evals: () total leapfrog steps (gradient evaluations), warmup included.
        warmup_grad_evals: () the part of ``grad_evals`` spent in warmup.
        divergences: (C,) divergent transitions after warmup, per chain.
        step_size: (C,) adapted step sizes.
        inverse_mass_matrix: (C, d, d) or (C, d) adapted inverse mass matrices.
        steps: (C, S) leapfrog steps of each transition after warmup.
    """

    samples: jax.Array
    grad_evals: jax.Array
    warmup_grad_evals: jax.Array
    divergences: jax.Array
    step_size: jax.Array
    inverse_mass_matrix: jax.Array
    steps: jax.Array


def _check_chain_args(logdensity_fn, position, num_warmup, num_samples):
    """Raise ``ValueError`` naming the argument before anything is traced."""
    check_shape("position", position, (None,))
    if int(num_warmup) < 1:  # BlackJAX's window adaptation cannot run zero steps
        raise ValueError(f"num_warmup must be >= 1, got {num_warmup}")
    if int(num_samples) < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    out = jax.eval_shape(logdensity_fn, jax.ShapeDtypeStruct(jnp.shape(position),
                                                             jnp.result_type(position)))
    if getattr(out, "shape", None) != ():
        raise ValueError("logdensity_fn must map a position of shape (d,) to a scalar, got "
                         f"{getattr(out, 'shape', type(out).__name__)} for d = "
                         f"{jnp.shape(position)[0]}")


def nuts_chain(logdensity_fn: Callable, key, position, num_warmup: int = 500,
               num_samples: int = 1000, dense_mass: bool = True,
               target_acceptance_rate: float = 0.8, initial_inverse_mass_matrix=None):
    """One NUTS chain: Stan-style window adaptation, then ``num_samples`` draws.

    The adaptation tunes the step size to ``target_acceptance_rate`` (Stan's
    ``adapt_delta``); a higher target takes smaller steps, which costs more
    gradients and avoids divergences where the posterior curves sharply.
    It starts from the identity mass matrix unless given
    ``initial_inverse_mass_matrix`` (e.g. the inverse Hessian at the mode), so
    that the first windows already step at the posterior's own scales. Each
    window's estimate is shrunk towards ``1e-3 I`` (Stan's rule), so a
    posterior standard deviation far below 0.03 is still overestimated.

    Args:
        logdensity_fn: ``theta (d,) -> ()`` unnormalised log density, a pure JAX function.
        key: a ``jax.random`` key; warmup uses ``split(key)[0]``, sampling ``split(key)[1]``.
        position: (d,) starting point.
        num_warmup, num_samples: warmup (adaptation) steps W >= 1 and kept draws S >= 1.
        dense_mass: adapt a dense inverse mass matrix (else a diagonal one).
        target_acceptance_rate: the step-size adaptation's target.
        initial_inverse_mass_matrix: None, or the adaptation's starting
            point: (d, d) with ``dense_mass``, else (d,).

    Returns:
        ``(draws (S, d), steps (S,), divergent (S,), warmup_steps (W,),
        step_size (), inverse_mass_matrix (d, d) or (d,))``; ``steps`` counts
        the leapfrog steps (gradient evaluations) of each transition.
    """
    import blackjax

    _check_chain_args(logdensity_fn, position, num_warmup, num_samples)
    if initial_inverse_mass_matrix is not None:
        d = jnp.shape(position)[0]
        check_shape("initial_inverse_mass_matrix", initial_inverse_mass_matrix,
                    (d, d) if dense_mass else (d,))
    k_warmup, k_sample = jax.random.split(key)
    warmup = blackjax.window_adaptation(blackjax.nuts, logdensity_fn,
                                        is_mass_matrix_diagonal=not dense_mass,
                                        initial_inverse_mass_matrix=initial_inverse_mass_matrix,
                                        target_acceptance_rate=target_acceptance_rate)
    (state, tuned), warmup_info = warmup.run(k_warmup, position, num_steps=num_warmup)
    nuts = blackjax.nuts(logdensity_fn, **tuned)

    def one_step(state, key):
        state, info = nuts.step(key, state)
        return state, (state.position, info.num_integration_steps, info.is_divergent)

    keys = jax.random.split(k_sample, num_samples)
    _, (draws, steps, divergent) = jax.lax.scan(one_step, state, keys)
    return (draws, steps, divergent, warmup_info.info.num_integration_steps,
            tuned["step_size"], tuned["inverse_mass_matrix"])


@partial(jax.jit, static_argnames=("logdensity_fn", "num_warmup", "num_samples", "dense_mass",
                                   "target_acceptance_rate"))
def run_nuts(logdensity_fn: Callable, key, initial_positions, *, num_warmup: int = 500,
             num_samples: int = 1000, dense_mass: bool = True,
             target_acceptance_rate: float = 0.8) -> NUTSRun:
    """Run :func:`nuts_chain` for several chains at once with ``jax.vmap``.

    Args:
        logdensity_fn: ``theta (d,) -> ()`` unnormalised log density (a pure JAX
            function; hashable, since it is a static argument).
        key: a ``jax.random`` key; chain ``c`` uses ``split(key, C)[c]``.
        initial_positions: (C, d) starting points, one row per chain.
        num_warmup, num_samples: warmup (adaptation) steps and kept draws per chain.
        dense_mass: adapt a dense inverse mass matrix (else a diagonal one).
        target_acceptance_rate: the step-size adaptation's target, as in :func:`nuts_chain`.

    Returns:
        A :class:`NUTSRun`.

    Example (a standard normal in two dimensions, two short chains):

    >>> import jax, jax.numpy as jnp
    >>> run = run_nuts(lambda x: -0.5 * x @ x, jax.random.key(0), jnp.zeros((2, 2)),
    ...                num_warmup=100, num_samples=200)
    >>> run.samples.shape, run.step_size.shape, run.inverse_mass_matrix.shape
    ((2, 200, 2), (2,), (2, 2, 2))
    >>> bool(run.grad_evals == run.steps.sum() + run.warmup_grad_evals)
    True
    """
    if jnp.ndim(initial_positions) != 2:
        raise ValueError(
            f"initial_positions must have shape (C, d), got {jnp.shape(initial_positions)}")
    chain = partial(nuts_chain, logdensity_fn, num_warmup=num_warmup,
                    num_samples=num_samples, dense_mass=dense_mass,
                    target_acceptance_rate=target_acceptance_rate)
    keys = jax.random.split(key, initial_positions.shape[0])
    draws, steps, divergent, warm, eps, imm = jax.vmap(chain)(keys, initial_positions)
    return NUTSRun(draws, jnp.sum(steps) + jnp.sum(warm), jnp.sum(warm),
                   jnp.sum(divergent, axis=1), eps, imm, steps)


# --- draws -> ArviZ ------------------------------------------------------------------------

def _arviz():
    with warnings.catch_warnings():  # ArviZ 0.23 announces its 1.0 refactor on import
        warnings.simplefilter("ignore", FutureWarning)
        import arviz
    return arviz


def _named_draws(samples, names, transform) -> tuple[dict[str, np.ndarray], tuple[int, int]]:
    """``{name: (C, S) array}`` from (C, S, d) draws, mapped by ``transform`` if given."""
    check_shape("samples", samples, (None, None, None))
    samples = jnp.asarray(samples)
    C, S, d = samples.shape
    values = samples if transform is None else jax.vmap(jax.vmap(transform))(samples)
    if isinstance(values, Mapping):
        default, leaves = tuple(values), list(values.values())
    elif isinstance(values, tuple):  # NamedTuple or plain tuple of scalars per draw
        default, leaves = getattr(values, "_fields", None), list(values)
    else:
        values = jnp.asarray(values)
        if values.shape[:2] != (C, S) or values.ndim != 3:
            raise ValueError("transform must map a draw of shape (d,) to a NamedTuple, dict "
                             "or tuple of scalars, or to a 1-D array; got an array of shape "
                             f"{values.shape[2:]} per draw")
        default, leaves = None, [values[..., i] for i in range(values.shape[-1])]
    for i, leaf in enumerate(leaves):
        if jnp.shape(leaf) != (C, S):
            raise ValueError(f"transform must give a scalar per draw and variable, got shape "
                             f"{jnp.shape(leaf)[2:]} for variable {i}")
    if names is None:
        names = default if default is not None else [f"theta[{i}]" for i in range(len(leaves))]
    names = list(names)
    if len(names) != len(leaves):
        raise ValueError(f"names must have one entry per variable: got {len(names)} names "
                         f"for {len(leaves)} variables")
    return {name: np.asarray(v) for name, v in zip(names, leaves)}, (C, S)


def to_inference_data(samples, names: Sequence[str] | None = None, *,
                      transform: Callable | None = None,
                      sample_stats: Mapping[str, Any] | None = None):
    """Draws as an ArviZ ``InferenceData``: one (C, S) variable per name, chains kept apart.

    Args:
        samples: the draws, in one of three forms:
            a (C, S, d) array in the coordinates of the log density (``NUTSRun.samples``,
            or the draws of ``jax.vmap(nuts_chain)``);
            a :class:`NUTSRun` (its ``samples``; its ``steps`` become the sample
            statistic ``n_steps``);
            or a mapping ``{name: (C, S) array}`` of draws already named (then
            ``names`` and ``transform`` must be None).
        names: the names of the variables, in order. Default: the fields of the
            NamedTuple (or the keys of the dict) that ``transform`` returns, else
            ``theta[0], ..., theta[d-1]``.
        transform: ``theta (d,) -> values`` applied to every draw with ``jax.vmap``,
            e.g. from unconstrained to natural coordinates; ``values`` is a
            NamedTuple, dict or tuple of scalars, or a (d',) array.
        sample_stats: ``{name: (C, S) array}`` per-draw statistics, e.g.
            ``{"diverging": divergent}`` from :func:`nuts_chain` under ``vmap``.

    Returns:
        An ``arviz.InferenceData`` with a ``posterior`` group (and ``sample_stats``
        if any were given).

    Example:

    >>> import jax.numpy as jnp, numpy as np
    >>> draws = np.random.default_rng(0).normal(size=(2, 100, 2))
    >>> idata = to_inference_data(draws, ["mu", "sigma"],  # theta = (mu, log sigma)
    ...                           transform=lambda th: th.at[1].set(jnp.exp(th[1])))
    >>> list(idata.posterior.data_vars), idata.posterior["sigma"].shape
    (['mu', 'sigma'], (2, 100))
    """
    stats = {}
    if isinstance(samples, NUTSRun):
        stats["n_steps"] = samples.steps
        samples = samples.samples
    if isinstance(samples, Mapping):
        if names is not None or transform is not None:
            raise ValueError("names and transform must be None when samples is a mapping "
                             "{name: (C, S) array}")
        posterior = {}
        for name, v in samples.items():
            check_shape(f"samples[{name!r}]", v, (None, None))
            posterior[name] = np.asarray(v)
        shape = next(iter(posterior.values())).shape if posterior else (0, 0)
        for name, v in posterior.items():
            check_shape(f"samples[{name!r}]", v, shape)
    else:
        posterior, shape = _named_draws(samples, names, transform)
    stats.update(sample_stats or {})
    for name, v in stats.items():
        check_shape(f"sample_stats[{name!r}]", v, shape)
    az = _arviz()
    groups = {"posterior": posterior}
    if stats:
        groups["sample_stats"] = {k: np.asarray(v) for k, v in stats.items()}
    # ArviZ sorts a dict's variables by name; keep ours in the order given.
    return az.InferenceData(**{group: az.dict_to_dataset(values)[list(values)]
                               for group, values in groups.items()})


def summary(draws, names: Sequence[str] | None = None, *, transform: Callable | None = None,
            round_to: int | None = None):
    """ArviZ's summary of the draws, one row per variable, in the order of ``names``.

    The columns are those of ``arviz.summary``: ``mean``, ``sd``, ``hdi_3%``,
    ``hdi_97%``, ``mcse_mean``, ``mcse_sd``, ``ess_bulk``, ``ess_tail``,
    ``r_hat`` (rank-normalised split R-hat and bulk/tail ESS of Vehtari et al. 2021).

    Args:
        draws: an ``arviz.InferenceData``, or anything :func:`to_inference_data` takes.
        names: for an ``InferenceData``, the variables to show (default: all, in
            their order); otherwise as in :func:`to_inference_data`.
        transform: as in :func:`to_inference_data` (not with an ``InferenceData``).
        round_to: decimals to round to; None (the default) leaves the numbers
            unrounded (ArviZ's own default would round R-hat to two decimals).

    Returns:
        A ``pandas.DataFrame`` indexed by variable name.

    Example:

    >>> import numpy as np
    >>> draws = np.random.default_rng(0).normal(size=(4, 500, 2))
    >>> table = summary(draws, ["a", "b"])
    >>> list(table.index), bool(table["r_hat"].max() < 1.01)
    (['a', 'b'], True)
    """
    az = _arviz()
    if isinstance(draws, az.InferenceData):
        if transform is not None:
            raise ValueError("transform must be None when draws is an InferenceData")
        idata = draws
        names = list(idata.posterior.data_vars) if names is None else list(names)
    else:
        idata = to_inference_data(draws, names, transform=transform)
        names = list(idata.posterior.data_vars)
    table = az.summary(idata, var_names=names, round_to="none" if round_to is None else round_to)
    return table.loc[names]
