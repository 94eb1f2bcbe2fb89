"""Helpers shared by the benchmark scripts: summarising NUTS draws, testing SBC ranks,
writing results."""

import csv
from pathlib import Path

import numpy as np
import scipy.stats

from lecture_utils.sampling import summary

RESULTS = Path(__file__).parent / "results"


def ess_and_rhat(draws, names=None, *, transform=None):
    """Smallest bulk ESS and largest R-hat over the variables of ``draws``.

    ``draws``, ``names`` and ``transform`` as in ``lecture_utils.sampling.summary``
    (the ArviZ summary lecture 4 and the tests use): (C, S, d) draws, mapped to
    natural parameters by ``transform`` if given, or a dict of (C, S) arrays.
    The numbers are unrounded.
    """
    table = summary(draws, names, transform=transform)
    return float(table["ess_bulk"].min()), float(table["r_hat"].max())


def rank_uniformity_pvalues(ranks, num_rank_draws: int, num_bins: int) -> list[float]:
    """Chi-square p-value, per column of ``ranks`` (R, d), of uniformity of ranks
    0..``num_rank_draws`` in ``num_bins`` equal bins (simulation-based calibration;
    ``num_rank_draws + 1`` must be a multiple of ``num_bins``)."""
    per_bin = (num_rank_draws + 1) // num_bins
    return [float(scipy.stats.chisquare(np.bincount(r // per_bin, minlength=num_bins)).pvalue)
            for r in np.asarray(ranks).T]


def write_csv(stem: str, rows: list[dict]):
    """Write ``rows`` (dicts with the same keys) to ``results/<stem>.csv``."""
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / f"{stem}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def markdown_table(rows: list[dict]) -> str:
    """``rows`` as a Markdown table, one column per key."""
    header = "| " + " | ".join(rows[0]) + " |\n|" + "---|" * len(rows[0]) + "\n"
    return header + "".join("| " + " | ".join(str(v) for v in r.values()) + " |\n"
                            for r in rows)
