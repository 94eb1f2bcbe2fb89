"""The XLA:CPU settings applied by ``import lecture_utils``: when, when not, and that they
change no result beyond rounding. Each case runs in a fresh process, since the settings
only take effect before JAX starts its backend."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from lecture_utils.xla_settings import LOOP_OPTION, OPT_OUT_ENV, tuned_xla_flags

REPORT = """
import json, os, warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    {before}
    import lecture_utils
from jax._src import xla_bridge
import jax, jax.numpy as jnp, numpy as np
from lecture_utils.kalman import kalman_loglik
from lecture_utils.lss import LSSModel
rng = np.random.default_rng(0)
A = rng.normal(size=(4, 4)); A *= 0.9 / np.max(np.abs(np.linalg.eigvals(A)))
model = LSSModel(jnp.asarray(A), 0.3 * jnp.eye(4), jnp.asarray(rng.normal(size=(2, 4))),
                 0.3 * jnp.eye(2))
y = jnp.asarray(rng.normal(size=(300, 2))).at[5, 1].set(jnp.nan)
f = lambda m: kalman_loglik(m, jnp.zeros(4), jnp.eye(4), y)
value, grad = jax.jit(jax.value_and_grad(f))(model)
print(json.dumps(dict(
    flags=os.environ.get("XLA_FLAGS", ""),
    async_dispatch=xla_bridge._CPU_ENABLE_ASYNC_DISPATCH.value,
    warnings=[str(w.message) for w in caught],
    value=float(value), grad=[np.asarray(g).tolist() for g in grad])))
"""


def run(env_changes, before="pass"):
    env = {k: v for k, v in os.environ.items()
           if k not in ("XLA_FLAGS", OPT_OUT_ENV, "JAX_CPU_ENABLE_ASYNC_DISPATCH")}
    env.update(env_changes)
    out = subprocess.run([sys.executable, "-c", REPORT.format(before=before)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def default():
    return run({})


def test_import_applies_both_settings(default):
    assert f"{LOOP_OPTION}=16384" in default["flags"]
    assert default["async_dispatch"] is False
    assert default["warnings"] == []


def test_opt_out_leaves_jax_as_it_is(default):
    plain = run({OPT_OUT_ENV: "1"})
    assert plain["flags"] == "" and plain["async_dispatch"] is True
    # Same value and gradient, to rounding: the settings schedule, they do not compute.
    np.testing.assert_allclose(plain["value"], default["value"], rtol=1e-13)
    for tuned, untuned in zip(default["grad"], plain["grad"]):
        np.testing.assert_allclose(tuned, untuned, rtol=1e-11, atol=1e-13)


def test_the_users_own_choice_is_kept():
    mine = run({"XLA_FLAGS": f"--xla_backend_extra_options={LOOP_OPTION}=1024",
                "JAX_CPU_ENABLE_ASYNC_DISPATCH": "true"})
    assert mine["flags"] == f"--xla_backend_extra_options={LOOP_OPTION}=1024"
    assert mine["async_dispatch"] is True


def test_a_started_backend_is_reported_not_changed():
    late = run({}, before="import jax.numpy; jax.numpy.zeros(1).block_until_ready()")
    assert late["flags"] == "" and late["async_dispatch"] is True
    assert len(late["warnings"]) == 1 and "before the first JAX computation" in late[
        "warnings"][0]


def test_flags_join_an_existing_list_of_backend_options():
    assert tuned_xla_flags("") == f"--xla_backend_extra_options={LOOP_OPTION}=16384"
    assert tuned_xla_flags("--xla_force_host_platform_device_count=2") == (
        f"--xla_force_host_platform_device_count=2 --xla_backend_extra_options={LOOP_OPTION}"
        "=16384")
    assert tuned_xla_flags("--xla_backend_extra_options=a=1,b") == (
        f"--xla_backend_extra_options=a=1,b,{LOOP_OPTION}=16384")
    assert tuned_xla_flags(f"--xla_backend_extra_options={LOOP_OPTION}=0") is None
