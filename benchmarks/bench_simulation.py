"""Jitted simulate_lss / simulate_ssm against a plain NumPy loop, side by side in one run.

Usage: python benchmarks/bench_simulation.py
Writes benchmarks/results/simulation.md and .csv. Median of repeated runs after
a warm-up; compile time measured apart from run time.
"""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from lecture_utils.simulation import (  # noqa: E402
    LSSModel,
    lss_observation,
    lss_transition,
    simulate_lss,
    simulate_ssm,
    simulate_ssm_numpy,
)
from lecture_utils.timing import time_jitted, time_python  # noqa: E402
from common import RESULTS, write_csv  # noqa: E402


def numpy_loop(A, C, G, H, x0, w, v):
    x = np.empty((len(w) + 1, len(x0)))
    x[0] = x0
    for t in range(len(w)):
        x[t + 1] = A @ x[t] + C @ w[t]
    return x, x @ G.T + v @ H.T


def lecture_model():
    """Lecture 1's model: N, M, K, L = 3, 2, 2, 2."""
    key = jax.random.key(1234)
    k_C, k_H = jax.random.split(key)
    A = jnp.array([[0.8, 0.1, 0.0], [0.0, 0.7, 0.1], [0.0, 0.0, 0.6]])
    G = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.3]])
    return LSSModel(A, 0.1 * jax.random.normal(k_C, (3, 2)), G,
                    0.05 * jax.random.normal(k_H, (2, 2)))


def main():
    model = lecture_model()
    model_np = LSSModel(*(np.asarray(m) for m in model))
    rows = []
    for T in (10, 100, 1_000, 10_000):
        k_w, k_v = jax.random.split(jax.random.key(T))
        x0, w, v = jnp.ones(3), jax.random.normal(k_w, (T, 2)), jax.random.normal(k_v, (T + 1, 2))
        args_np = [np.asarray(a) for a in (x0, w, v)]
        x_ref, y_ref = numpy_loop(*model_np, *args_np)
        np.testing.assert_allclose(simulate_lss(model, x0, w, v)[1], y_ref, atol=1e-10)
        lss = time_jitted(simulate_lss, model, x0, w, v)
        ssm = time_jitted(
            lambda x0, w, v: simulate_ssm(lss_transition, lss_observation, x0, w, v, model.H, model),
            x0, w, v)
        numpy_s = time_python(numpy_loop, *model_np, *args_np)
        numpy_ssm_s = time_python(simulate_ssm_numpy, lss_transition, lss_observation,
                                  *args_np, model_np.H, model_np)
        rows.append({"T": T,
                     "simulate_lss_us": lss.run_s * 1e6, "simulate_lss_compile_ms": lss.compile_s * 1e3,
                     "simulate_ssm_us": ssm.run_s * 1e6, "simulate_ssm_compile_ms": ssm.compile_s * 1e3,
                     "numpy_loop_us": numpy_s * 1e6, "simulate_ssm_numpy_us": numpy_ssm_s * 1e6})
        print(rows[-1], flush=True)

    write_csv("simulation", rows)
    lines = [
        "# Simulation: jitted JAX vs NumPy loop (lecture 1 model, N=3, CPU, float64)",
        "",
        "| T | simulate_lss (jit) | simulate_ssm (jit) | NumPy loop | simulate_ssm_numpy | "
        "compile lss / ssm |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['T']:,} | {r['simulate_lss_us']:.1f} us | {r['simulate_ssm_us']:.1f} us | "
            f"{r['numpy_loop_us']:.1f} us | {r['simulate_ssm_numpy_us']:.1f} us | "
            f"{r['simulate_lss_compile_ms']:.0f} / {r['simulate_ssm_compile_ms']:.0f} ms |")
    lines += ["", "Median per call after a warm-up; compile time measured once, apart."]
    (RESULTS / "simulation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
