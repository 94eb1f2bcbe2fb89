"""Append the committed benchmark results to the book's benchmarks appendix.

``benchmarks/`` is outside the book's sources (it is in ``exclude_patterns``):
its scripts are not run by the build. Their committed output is:
``benchmarks/results/<name>.md`` (a Markdown table with a ``#`` title),
optionally ``<name>*.csv`` (the raw numbers) and ``<name>*.png`` (figures).

When Sphinx reads the page ``appendix/benchmarks``, this extension appends to
its source one section per results file that exists, in the order of ORDER and
then alphabetically: the file's title as the heading, its figures, the rest of
the file through MyST's ``{include}`` (tables in a compact font, see
``static/benchmark_results.css``), download links to its CSV files, and
the script that wrote it (``benchmarks/bench_<name>.py``) and the date the
file was last committed (from git, when the book is built from a full clone). Results added later by a new benchmark appear without editing
the page, and nothing is re-run at build time.
"""

from __future__ import annotations

from pathlib import Path
import subprocess

PAGE = "appendix/benchmarks"
RESULTS = "benchmarks/results"
ORDER = ("kalman", "simulation", "mle", "hmc", "coordinates", "nk", "nk_reference", "sbc_nk",
         "particles")


def _git(srcdir: Path, *args: str) -> str | None:
    try:
        result = subprocess.run(["git", "-C", str(srcdir), *args], capture_output=True,
                                text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def committed_on(srcdir: Path, path: str) -> str:
    """When ``path`` was last committed, as a phrase for the page."""
    if _git(srcdir, "rev-parse", "--is-shallow-repository") != "false":
        return "commit date unknown (the book was not built from a full git clone)"
    date = _git(srcdir, "log", "-1", "--format=%cs", "--", path)
    if not date:
        return "not committed yet"
    changed = _git(srcdir, "status", "--porcelain", "--", path)
    return f"last committed on {date}" + (", changed since" if changed else "")


def results_files(srcdir: Path) -> list[Path]:
    """The committed results tables, in reading order."""
    found = sorted((srcdir / RESULTS).glob("*.md"))
    rank = {name: i for i, name in enumerate(ORDER)}
    return sorted(found, key=lambda p: (rank.get(p.stem, len(ORDER)), p.stem))


def results_myst(srcdir: Path) -> str:
    """MyST source for every results file, as seen from ``appendix/``.

    Each section: the file's ``#`` title as a heading, its figures (the summary
    first), the rest of the file, and where it came from.
    """
    blocks = []
    for table in results_files(srcdir):
        rel = f"../{RESULTS}"
        text = table.read_text(encoding="utf-8")
        lines = text.splitlines()
        start = next((i for i, line in enumerate(lines) if line.strip()), 0)
        first = lines[start] if lines else ""
        titled = first.startswith("# ")
        block = [f"## {first[2:].strip() if titled else table.stem}", ""]
        for figure in sorted(table.parent.glob(f"{table.stem}*.png")):
            if f"]({figure.name})" not in text:  # not already shown by the file itself
                block += [f"```{{image}} {rel}/{figure.name}",
                          f":alt: {figure.stem.replace('_', ' ')} (from {RESULTS}/{figure.name})",
                          ":width: 100%", "```", ""]
        block += [f"```{{include}} {rel}/{table.name}", ":heading-offset: 1"]
        if titled:
            block += [f":start-line: {start + 1}"]
        block += ["```", ""]
        path = f"{RESULTS}/{table.name}"
        script = srcdir / "benchmarks" / f"bench_{table.stem}.py"
        source = f"`{path}`" + (f", written by `benchmarks/{script.name}`" if script.exists() else "")
        source += f", {committed_on(srcdir, path)}."
        csvs = sorted(table.parent.glob(f"{table.stem}*.csv"))
        if csvs:
            source += " Raw numbers: " + ", ".join(
                f"{{download}}`{csv.name} <{rel}/{csv.name}>`" for csv in csvs) + "."
        block += [f"*From {source}*", ""]
        blocks.append("\n".join(block))
    if not blocks:
        return f"\nNo results are committed in `{RESULTS}/` yet.\n"
    return "\n" + "\n".join(blocks)


def _add_stylesheet(app, config):
    config.html_static_path.append(str(Path(__file__).parent / "static"))
    app.add_css_file("benchmark_results.css")


def _append_results(app, docname, source):
    if docname == PAGE:
        srcdir = Path(app.srcdir)
        for table in results_files(srcdir):
            app.env.note_dependency(str(table))
        source[0] += results_myst(srcdir)


def setup(app):
    app.connect("config-inited", _add_stylesheet)
    app.connect("source-read", _append_results)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
