"""The committed notebooks/ (opened by Colab) must match lectures/ cell for cell."""

from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
LECTURES = sorted((ROOT / "lectures").glob("*.md"))


def cells(nb):
    return [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in nb.cells]


@pytest.mark.parametrize("lecture", LECTURES, ids=lambda p: p.stem)
def test_notebook_matches_lecture(lecture):
    notebook = ROOT / "notebooks" / f"{lecture.stem}.ipynb"
    assert notebook.exists(), f"{notebook} missing: run tools/sync-notebooks"
    expected = cells(jupytext.read(lecture))
    actual = cells(nbformat.read(notebook, as_version=4))
    assert actual == expected, f"{notebook.name} is stale: run tools/sync-notebooks"


def test_every_lecture_is_in_the_toc():
    toc = (ROOT / "_toc.yml").read_text()
    for lecture in LECTURES:
        assert f"lectures/{lecture.stem}" in toc
