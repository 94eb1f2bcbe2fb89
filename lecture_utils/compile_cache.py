"""JAX's persistent compilation cache, switched on when ``lecture_utils`` is imported.

Compiling a program with XLA takes far longer than tracing it. JAX can keep
compiled programs on disk, keyed by a hash of the program, the compiler
options and the JAX, jaxlib and device versions, and reuse them in later
processes: the notebook test run, the book build and the next session at the
keyboard then compile each program once.

Where the cache lives, in order of precedence:

1. ``JAX_COMPILATION_CACHE_DIR``, if set in the environment (JAX's own
   variable; set it to the empty string for no cache at all), or a directory
   set with ``jax.config.update("jax_compilation_cache_dir", ...)`` before
   ``lecture_utils`` is imported;
2. otherwise ``$XDG_CACHE_HOME/lecture_utils/jax``, by default
   ``~/.cache/lecture_utils/jax``.

To turn it off, set ``LECTURE_UTILS_NO_CACHE=1`` (or
``JAX_COMPILATION_CACHE_DIR=``) before starting Python. Deleting the directory
is always safe. As with any JAX compilation cache, do not point it at a
directory that other users can write to.
"""

import contextlib
import os
from pathlib import Path

import jax
from jax.experimental.compilation_cache import compilation_cache

__all__ = ["cache_dir", "default_cache_dir", "enable_persistent_cache", "persistent_cache_bypassed"]

DISABLE_ENV = "LECTURE_UTILS_NO_CACHE"

# Cache every program that takes this long to compile: small ones too (JAX's
# default, 1 s, skips nearly every program of the lectures).
MIN_COMPILE_TIME_SECS = 0.0


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/lecture_utils/jax``, or ``~/.cache/lecture_utils/jax``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lecture_utils" / "jax"


def _disabled_by_env() -> bool:
    return os.environ.get(DISABLE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def enable_persistent_cache() -> str | None:
    """Point JAX's persistent compilation cache at a per-user directory.

    Respects a directory the user chose (``JAX_COMPILATION_CACHE_DIR`` or
    ``jax_compilation_cache_dir``), ``LECTURE_UTILS_NO_CACHE=1``, and JAX's own
    ``JAX_ENABLE_COMPILATION_CACHE=false``; lowers the minimum compile time for
    an entry to be written unless ``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS``
    is set. Returns the directory in use, or None when there is no cache.
    """
    if _disabled_by_env() or not jax.config.jax_enable_compilation_cache:
        return None
    if "JAX_COMPILATION_CACHE_DIR" in os.environ or jax.config.jax_compilation_cache_dir:
        path = jax.config.jax_compilation_cache_dir or None  # the user's choice; "" = none
    else:
        path = str(default_cache_dir())
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
        except OSError:  # read-only home, say: run without a cache
            return None
        jax.config.update("jax_compilation_cache_dir", path)
    if path and "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_TIME_SECS)
    return path


def cache_dir() -> str | None:
    """The persistent cache directory JAX is using, or None."""
    if not jax.config.jax_enable_compilation_cache:
        return None
    return jax.config.jax_compilation_cache_dir or None


@contextlib.contextmanager
def persistent_cache_bypassed():
    """Within this block JAX neither reads nor writes the persistent cache.

    For measuring a real compile: a program compiled here is compiled by XLA
    even if an earlier process left it on disk. The in-memory caches are not
    touched.
    """
    was_enabled = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    compilation_cache.reset_cache()  # JAX decides once per process; ask again
    try:
        yield
    finally:
        jax.config.update("jax_enable_compilation_cache", was_enabled)
        compilation_cache.reset_cache()
