"""Helpers shared by the benchmark scripts: summarising NUTS draws, writing results."""

import csv
from pathlib import Path

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
