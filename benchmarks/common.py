"""Helpers shared by the benchmark scripts: summarising NUTS draws, writing results."""

import csv
from pathlib import Path

import arviz as az
import numpy as np

RESULTS = Path(__file__).parent / "results"


def ess_and_rhat(draws: dict):
    """Smallest bulk ESS and largest R-hat (ArviZ) over named (chains, draws) arrays."""
    summary = az.summary(az.from_dict(posterior={k: np.asarray(v) for k, v in draws.items()}))
    return float(summary["ess_bulk"].min()), float(summary["r_hat"].max())


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
