"""XLA:CPU settings under which a small filter loop runs as one kernel, applied at import.

On XLA:CPU a ``lax.scan`` whose body is a few dozen tiny operations (a Kalman
step on 5x5 matrices) runs each operation as a separately launched kernel,
and the launches, not the arithmetic, dominate the time of each step. XLA
compiles a loop into one native kernel when its body touches fewer bytes than
``xla_cpu_small_while_loop_byte_threshold``; raising that threshold to
:data:`LOOP_BYTES` covers the filters of this book. Turning off asynchronous
dispatch on the CPU (``jax_cpu_enable_async_dispatch``) runs a small program
inline instead of handing it to a worker thread, which removes most of the
fixed cost of one call.

Both settings are read when JAX starts its CPU backend, so
:func:`apply_xla_settings` must run before the first JAX computation;
``import lecture_utils`` calls it first thing. It leaves alone a setting the
user chose (an ``XLA_FLAGS`` that names the loop option, a
``JAX_CPU_ENABLE_ASYNC_DISPATCH`` in the environment), does nothing when
``LECTURE_UTILS_NO_XLA_TUNING=1``, and warns, changing nothing, when JAX's
backend has already started. Results are unchanged to rounding: the settings
decide how XLA schedules the same operations, not which operations run.
"""

import os
import warnings

import jax
from jax._src import xla_bridge

__all__ = ["LOOP_BYTES", "LOOP_OPTION", "OPT_OUT_ENV", "apply_xla_settings", "tuned_xla_flags"]

OPT_OUT_ENV = "LECTURE_UTILS_NO_XLA_TUNING"
LOOP_OPTION = "xla_cpu_small_while_loop_byte_threshold"
LOOP_BYTES = 16384
_EXTRA = "--xla_backend_extra_options="


def tuned_xla_flags(flags: str) -> str | None:
    """``XLA_FLAGS`` with the loop option added, or None if ``flags`` already names it.

    XLA reads ``--xla_backend_extra_options`` as one comma-separated list of
    ``key=value`` pairs, so the option joins an existing list rather than
    starting a second flag (which would replace the first).

    Example:
        >>> tuned_xla_flags("--xla_backend_extra_options=a=1 --foo")
        '--xla_backend_extra_options=a=1,xla_cpu_small_while_loop_byte_threshold=16384 --foo'
    """
    if LOOP_OPTION in flags:
        return None
    option = f"{LOOP_OPTION}={LOOP_BYTES}"
    parts = flags.split()
    for i, part in enumerate(parts):
        if part.startswith(_EXTRA):
            current = part[len(_EXTRA):]
            parts[i] = _EXTRA + (f"{current},{option}" if current else option)
            return " ".join(parts)
    return " ".join(parts + [_EXTRA + option])


def _opted_out() -> bool:
    return os.environ.get(OPT_OUT_ENV, "").strip().lower() not in ("", "0", "false", "no")


def apply_xla_settings() -> bool:
    """Apply the settings of this module if JAX's backend has not started; return whether it did."""
    if _opted_out():
        return False
    flags = tuned_xla_flags(os.environ.get("XLA_FLAGS", ""))
    async_default = "JAX_CPU_ENABLE_ASYNC_DISPATCH" not in os.environ
    if flags is None and not async_default:
        return False
    if xla_bridge.backends_are_initialized():
        warnings.warn(
            "lecture_utils was imported after JAX started its backend, so XLA:CPU runs the "
            "Kalman filters' loops without its small-loop setting (several times slower, same "
            "results). Import lecture_utils before the first JAX computation, or set "
            f"{OPT_OUT_ENV}=1 to silence this.", stacklevel=3)
        return False
    if flags is not None:
        os.environ["XLA_FLAGS"] = flags
    if async_default:
        jax.config.update("jax_cpu_enable_async_dispatch", False)
    return True
