"""Simulation-based calibration (Talts et al. 2018) of lecture 5's whole estimation pipeline.

Each replication draws the 13 parameters of the An-Schorfheide model from
the prior truncated to the determinacy region (the prior the posterior of
``lecture_utils.an_schorfheide.log_posterior`` has: its likelihood is
``-inf`` outside), solves the model (``solve_linear_re``), simulates T = 80
quarters of the three observables from its state-space form with the
stationary start (``lecture_utils.simulation.simulate_lss``), samples the
posterior with ``lecture_utils.sampling.nuts_chain`` (BlackJAX NUTS, the
lecture's sampler, one chain) and records the rank of each true parameter
among L thinned posterior draws. If the pipeline (model, solver, its
derivatives, filter, priors, change of variables, sampler) draws from the
posterior, every rank is uniform on {0, ..., L}; a chi-square test on binned
ranks checks that, per parameter. Replications run in chunks, each chunk
under one ``jax.vmap``; replication r uses the key ``fold_in(key(SEED), r)``.

A negative control runs the same calibration with a wrong log density, the
log-Jacobian of the change of variables left out; it must be rejected,
otherwise the test has no power against such an error.

Short chains keep it affordable on 2 shared cores: each chain starts at the
true parameter (given y, a draw from the posterior, so the chain starts in
stationarity), NUM_WARMUP steps of window adaptation, then THIN * L draws,
every THIN-th kept.

Run, in N processes at once (chunks c with c % N == I), then merge:
    python benchmarks/sbc_nk.py --worker I N [--replications R] &   (I = 0..N-1)
    python benchmarks/sbc_nk.py --merge          (complete chunks 0, 1, ... only)
    python benchmarks/sbc_nk.py --control        (negative control, after a merge)
Writes benchmarks/results/sbc_nk.json and sbc_nk.md; tests/test_nk_benchmarks.py
checks the committed result and re-draws chunk 0's true parameters (re-running
its chains takes minutes: LECTURE_UTILS_SLOW_TESTS=1).
"""

import argparse
import functools
import json
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import lecture_utils  # noqa: E402,F401  (float64, XLA settings)
from lecture_utils import an_schorfheide as nk  # noqa: E402
from lecture_utils.sampling import nuts_chain  # noqa: E402
from lecture_utils.simulation import simulate_lss  # noqa: E402

RESULTS = Path(__file__).parent / "results"
T_OBS = 80
NUM_REPLICATIONS = 200
CHUNK = 4
NUM_CONTROL_REPLICATIONS = 100
NUM_WARMUP = 150
THIN = 2
NUM_RANK_DRAWS = 49  # L: ranks take values 0..49
NUM_BINS = 10
TARGET_ACCEPTANCE = 0.8
SEED = 20261130
NAMES = nk.PARAM_NAMES


def draw_determinate(key):
    """One draw from the prior truncated to determinacy: redraw until ``solve`` says ok."""
    def draw(k):
        p = nk.sample_prior(k)
        return p, nk.solve(p)[2]

    def again(carry):
        return ~carry[2]

    def redraw(carry):
        k, _, _ = carry
        k, sub = jax.random.split(k)
        p, ok = draw(sub)
        return k, p, ok

    key, sub = jax.random.split(key)
    _, p, _ = jax.lax.while_loop(again, redraw, (key, *draw(sub)))
    return p


def simulate(key):
    """True parameters from the truncated prior and T_OBS observations.

    Returns ``(theta (13,) unconstrained, y (T_OBS, 3))``: ``s_0`` drawn from
    the stationary distribution, ``y[t] = const + G s_{t+1}``.
    """
    k_prior, k_x0, k_w = jax.random.split(key, 3)
    p = draw_determinate(k_prior)
    model, mu0, Sigma0, const, _ = nk.state_space(p)
    # Sigma0 is singular (three shocks drive six states): draw by eigh, not Cholesky.
    vals, vecs = jnp.linalg.eigh(Sigma0)
    x0 = mu0 + vecs @ (jnp.sqrt(jnp.clip(vals, 0.0)) * jax.random.normal(k_x0, (6,)))
    w = jax.random.normal(k_w, (T_OBS, 3))
    v = jnp.zeros((T_OBS + 1, 1))
    _, y = simulate_lss(model, x0, w, v)
    return nk.unconstrain(p), y[1:] + const


def split_replication_key(key):
    """``(k_sim, k_nuts)``: the keys of a replication's simulation and of its chain."""
    return jax.random.split(key)


def replication(key, with_jacobian):
    """Ranks (13,) of the true parameters among NUM_RANK_DRAWS thinned draws, divergences,
    and the true parameters (13,), unconstrained."""
    k_sim, k_nuts = split_replication_key(key)
    theta_true, y = simulate(k_sim)

    def logdensity(theta):
        value = nk.log_posterior(theta, y)
        return jnp.where(with_jacobian, value, value - nk.log_abs_det_jacobian(theta))

    # The chain starts at the true parameter: given y it is a draw from the posterior
    # (that is how the joint draw was made), so the chain starts in stationarity and the
    # warm-up only adapts the step size and mass matrix.
    draws, _, divergent, *_ = nuts_chain(
        logdensity, k_nuts, theta_true, num_warmup=NUM_WARMUP,
        num_samples=THIN * NUM_RANK_DRAWS, dense_mass=True,
        target_acceptance_rate=TARGET_ACCEPTANCE)
    kept = draws[THIN - 1::THIN]
    # constrain is increasing in every coordinate, so ranks in theta are ranks in p
    return jnp.sum(kept < theta_true, axis=0), jnp.sum(divergent), theta_true


@functools.cache
def _chunk_fn(with_jacobian):
    return jax.jit(jax.vmap(lambda k: replication(k, with_jacobian)))


def replication_keys(first, count):
    """Keys of replications ``first, ..., first + count - 1``."""
    base = jax.random.key(SEED)
    return jax.vmap(lambda r: jax.random.fold_in(base, r))(jnp.arange(first, first + count))


def run_chunk(chunk_index, with_jacobian=True):
    """Ranks (CHUNK, 13), divergences (CHUNK,) and true theta (CHUNK, 13) of one chunk."""
    ranks, div, theta = _chunk_fn(with_jacobian)(replication_keys(chunk_index * CHUNK, CHUNK))
    return np.asarray(ranks), np.asarray(div), np.asarray(theta)


def num_bins(num_replications):
    """NUM_BINS equal bins of the L + 1 rank values, fewer (5, then 2) when there are too
    few replications for an expected count of 5 per bin (the chi-square approximation)."""
    for bins in (NUM_BINS, 5, 2):
        if num_replications >= 5 * bins:
            return bins
    return 2


def chi_square(ranks):
    """p-value per parameter of uniformity of ranks 0..L in ``num_bins`` equal bins."""
    bins = num_bins(len(ranks))
    per_bin = (NUM_RANK_DRAWS + 1) // bins
    return [float(scipy.stats.chisquare(np.bincount(ranks[:, j] // per_bin,
                                                    minlength=bins)).pvalue)
            for j in range(ranks.shape[1])]


def calibrate(with_jacobian, num_chunks, label):
    """Run chunks 0..num_chunks-1 in this process; ranks, divergences and p-values."""
    ranks, div, theta = [], [], []
    tic = time.perf_counter()
    out = None
    for c in range(num_chunks):
        r, d, th = run_chunk(c, with_jacobian)
        ranks.append(r)
        div.append(d)
        theta.append(th)
        print(f"{label} chunk {c + 1}/{num_chunks}: {time.perf_counter() - tic:.0f} s, "
              f"divergences {int(d.sum())}", flush=True)
        all_ranks, all_div = np.concatenate(ranks), np.concatenate(div)
        out = {"ranks": all_ranks.tolist(), "theta_true": np.concatenate(theta).tolist(),
               "divergences": int(all_div.sum()),
               "replications_with_divergences": int(np.sum(all_div > 0)),
               "chi2_pvalues": dict(zip(NAMES, chi_square(all_ranks))),
               "seconds": round(time.perf_counter() - tic, 1)}
    return out


def markdown(result):
    correct, control = result["correct"], result.get("no_jacobian_control")
    rows = ["| parameter | p-value, correct pipeline | p-value, no-Jacobian control |",
            "|---|---|---|"]
    for name in NAMES:
        c = control["chi2_pvalues"][name] if control else float("nan")
        rows.append(f"| {name} | {correct['chi2_pvalues'][name]:.3f} | {c:.2g} |")
    family = 0.01 / len(NAMES)
    lines = [
        "# Simulation-based calibration of the New Keynesian pipeline",
        "",
        f"Date: {result['date']}. {result['machine']}.",
        "",
        f"{result['replications']} replications"
        + (f" (of {result['planned_replications']} planned: the run was stopped early; too "
           "few for the chi-square test to have power)"
           if result["replications"] < result.get("planned_replications", 0) else "")
        + " of lecture 5's whole pipeline: parameters "
        "from the prior truncated to determinacy, T = 80 quarters simulated from the solved "
        "model, one NUTS chain started at the true parameter "
        f"({NUM_WARMUP} warm-up steps, {THIN * NUM_RANK_DRAWS} draws, "
        f"every {THIN}-th kept: L = {NUM_RANK_DRAWS}, target acceptance {TARGET_ACCEPTANCE}), "
        "the rank of each true parameter among the kept draws. Chunks of "
        f"{CHUNK} replications run under one vmap. Uniform ranks: chi-square test on "
        f"{num_bins(result['replications'])} equal bins, per parameter.",
        "",
        *rows,
        "",
        f"Smallest p-value, correct pipeline: {min(correct['chi2_pvalues'].values()):.3f} "
        f"(family-wise level 0.01 over {len(NAMES)} parameters: each above {family:.1e}). "
        f"Divergent transitions: {correct['divergences']} in "
        f"{correct['replications_with_divergences']} of {result['replications']} "
        f"replications. Time: {correct['seconds']:.0f} s in each of "
        f"{correct.get('workers', 1)} processes.",
    ]
    if control:
        lines += ["", f"Negative control ({result['control_replications']} replications, the "
                  "log-Jacobian of the change of variables left out): smallest p-value "
                  f"{min(control['chi2_pvalues'].values()):.1e}; rejected if below 0.001. "
                  f"Time: {control['seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


def merge(parts):
    """One result from the workers' partial results: complete chunks, in replication order."""
    result = dict(parts[0], correct=None)
    by_index = {}
    for part in parts:
        for i, r, th, d in zip(part["replication_index"], part["correct"]["ranks"],
                               part["correct"]["theta_true"], part["divergences_each"]):
            by_index[i] = (r, th, d)
    order = sorted(by_index)
    order = order[:next((k for k, i in enumerate(order) if i != k), len(order))]  # no gaps
    ranks = np.array([by_index[i][0] for i in order])
    div = np.array([by_index[i][2] for i in order])
    result["replications"] = len(order)
    result["bins"] = num_bins(len(order))
    result["correct"] = {"ranks": ranks.tolist(),
                         "theta_true": [by_index[i][1] for i in order],
                         "divergences": int(div.sum()),
                         "replications_with_divergences": int(np.sum(div > 0)),
                         "chi2_pvalues": dict(zip(NAMES, chi_square(ranks))),
                         "seconds": max(p["correct"]["seconds"] for p in parts),
                         "workers": len(parts)}
    for key in ("replication_index", "divergences_each", "worker"):
        result.pop(key, None)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--control", action="store_true",
                        help="run the no-Jacobian negative control (after --merge)")
    parser.add_argument("--replications", type=int, default=NUM_REPLICATIONS)
    parser.add_argument("--worker", type=int, nargs=2, metavar=("I", "N"), default=(0, 1),
                        help="run chunks c with c %% N == I and write a partial result "
                             "(processes in parallel; then --merge)")
    parser.add_argument("--parts", default=str(Path(tempfile.gettempdir()) / "sbc_nk_parts"),
                        help="folder of the workers' partial results")
    parser.add_argument("--merge", action="store_true",
                        help="merge the workers' partial results into sbc_nk.json/.md")
    args = parser.parse_args()
    parts_dir = Path(args.parts)
    parts_dir.mkdir(parents=True, exist_ok=True)
    if args.merge:
        parts = [json.loads(p.read_text()) for p in sorted(parts_dir.glob("sbc_nk.part*.json"))]
        result = merge(parts)
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "sbc_nk.json").write_text(json.dumps(result, indent=1) + "\n")
        (RESULTS / "sbc_nk.md").write_text(markdown(result))
        return print(markdown(result))
    if args.control:  # after a merge: the negative control, in this process
        result = json.loads((RESULTS / "sbc_nk.json").read_text())
        result["control_replications"] = NUM_CONTROL_REPLICATIONS
        result["no_jacobian_control"] = calibrate(False, NUM_CONTROL_REPLICATIONS // CHUNK,
                                                  "control")
        (RESULTS / "sbc_nk.json").write_text(json.dumps(result, indent=1) + "\n")
        (RESULTS / "sbc_nk.md").write_text(markdown(result))
        return print(markdown(result))
    worker, workers = args.worker
    result = {
        "what": "simulation-based calibration of lecture 5's pipeline (an_schorfheide."
                "log_posterior, solve_linear_re, kalman_loglik, sampling.nuts_chain), T=80",
        "planned_replications": args.replications, "chunk": CHUNK, "seed": SEED,
        "num_warmup": NUM_WARMUP, "thin": THIN, "rank_draws": NUM_RANK_DRAWS,
        "target_acceptance": TARGET_ACCEPTANCE, "t_obs": T_OBS, "parameters": list(NAMES),
        "machine": f"Machine: {platform.machine()}, {platform.processor() or 'CPU'}, "
                   f"jax {jax.__version__}, 2 cores shared with other jobs",
        "date": date.today().isoformat(), "worker": worker,
    }
    chunks = [c for c in range(args.replications // CHUNK) if c % workers == worker]
    ranks, theta, div = [], [], []
    tic = time.perf_counter()
    for n, c in enumerate(chunks):
        r, d, th = run_chunk(c, True)
        ranks += r.tolist()
        theta += th.tolist()
        div += d.tolist()
        print(f"worker {worker}: chunk {c} ({n + 1}/{len(chunks)}), "
              f"{time.perf_counter() - tic:.0f} s, divergences {int(d.sum())}", flush=True)
        result["replication_index"] = [i for k in chunks[:n + 1]
                                       for i in range(k * CHUNK, (k + 1) * CHUNK)]
        result["divergences_each"] = div
        result["correct"] = {"ranks": ranks, "theta_true": theta,
                             "seconds": round(time.perf_counter() - tic, 1)}
        (parts_dir / f"sbc_nk.part{worker}.json").write_text(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
