"""The particle-filter benchmark's baselines and its committed result.

benchmarks/bench_particles.py times our bootstrap filter against two
baselines it defines itself, a NumPy loop and a model written for Chopin's
``particles`` library. A speed ratio means something only if the baselines
run the same filter, so here each is checked against an independent answer:
with the volatilities of volatility at zero and the initial log variances
known, the UC-SV model is the local-level model, and the Kalman filter gives
its likelihood exactly; a particle filter's likelihood estimate (not its
log) is unbiased for it. The committed result is checked for what its page
states: both sizes and all four rows, ratios that are the ratios of its
times, and the agreement check it says was passed.
"""

import json
import math
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from helpers import load_benchmark

import lecture_utils  # noqa: F401  (float64)
from lecture_utils import ucsv
from lecture_utils.kalman import kalman_loglik
from lecture_utils.simulation import LSSModel

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "particles.json"


LOCAL_LEVEL = ucsv.UCSVParams(gamma_eps=0.0, gamma_eta=0.0, h0_mean=0.3, h0_sd=0.0)


def _exact_loglik(y):
    one = jnp.ones((1, 1))
    sd = math.exp(LOCAL_LEVEL.h0_mean / 2)
    model = LSSModel(one, sd * one, one, sd * one)
    return float(kalman_loglik(model, jnp.array([LOCAL_LEVEL.tau0_mean]),
                               jnp.eye(1) * LOCAL_LEVEL.tau0_sd**2, jnp.asarray(y)))


@pytest.mark.parametrize("baseline", ["numpy", "particles"])
def test_baselines_are_unbiased_on_the_local_level_model(baseline):
    """mean of L_hat / L over 20 runs within 4 standard errors of 1 (T = 40)."""
    pytest.importorskip("particles")
    bench = load_benchmark("bench_particles")
    _, y = ucsv.load_inflation()
    y = y[:40]
    exact = _exact_loglik(y)
    if baseline == "numpy":
        rng = np.random.default_rng(0)
        ll = [bench.numpy_filter(LOCAL_LEVEL, y, 500, rng) for _ in range(20)]
    else:
        np.random.seed(0)
        model = bench.particles_model(LOCAL_LEVEL)
        ll = [bench.particles_filter(model, y, 500) for _ in range(20)]
    ratio = np.exp(np.array(ll) - exact)
    assert abs(ratio.mean() - 1) < 4 * ratio.std(ddof=1) / math.sqrt(ratio.size) + 1e-3, (
        ratio.mean(), ratio.std())


def test_committed_result():
    result = json.loads(RESULT.read_text())
    rows = result["rows"]
    implementations = {"ours", "ours, noise given", "particles", "numpy"}
    assert {(r["P"], r["implementation"]) for r in rows} == {
        (P, name) for P in (1_000, 100_000) for name in implementations}
    by = {(r["P"], r["implementation"]): r for r in rows}
    for r in rows:
        np.testing.assert_allclose(r["particle_steps_per_s"], r["P"] * r["T"] / r["wall_s"])
        np.testing.assert_allclose(r["speedup_vs_particles"],
                                   by[r["P"], "particles"]["wall_s"] / r["wall_s"])
        assert (r["implementation"].startswith("ours")) == math.isfinite(r["compile_s"])
    agree = result["agreement"]
    names = list(agree)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            se = math.hypot(agree[a]["sd"] / math.sqrt(agree[a]["runs"]),
                            agree[b]["sd"] / math.sqrt(agree[b]["runs"]))
            assert abs(agree[a]["mean"] - agree[b]["mean"]) < 4 * se, (a, b)
    assert not result["quick"] and result["repeats"] >= 5
    # The lecture's cold run, when recorded, passed (its time is a measurement, not a check).
    if result.get("lecture"):
        assert result["lecture"]["passed"], result["lecture"]
