"""The notebooks of notebooks/ are what tools/sync-notebooks makes of lectures/ now.

notebooks/<name>.ipynb (the student set, opened by the Colab button) has no
hidden test cell and no solution but every exercise statement;
notebooks/instructor/<name>.ipynb has, in addition, every solution. What a
lecture's exercises and solutions are is read here from the lecture's text with
regular expressions of its own, not with the sync tool's parser, so a mistake
of the tool cannot hide itself.
"""

import re
import runpy
from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
LECTURES = sorted((ROOT / "lectures").glob("*.md"))
SYNC = runpy.run_path(str(ROOT / "tools" / "sync-notebooks"))
STUDENT, INSTRUCTOR = ROOT / "notebooks", ROOT / "notebooks" / "instructor"

CODE_CELL = re.compile(r"^```\{code-cell\}[^\n]*\n(?P<options>(?::[^\n]*\n)*)\n?(?P<source>.*?)^```[ \t]*$",
                       re.MULTILINE | re.DOTALL)
EXERCISE = re.compile(r"^(?P<fence>`{3,}|:{3,})\{exercise\}[^\n]*\n(?P<body>.*?)^(?P=fence)[ \t]*$"
                      r"|^```\{exercise-start\}[^\n]*\n(?P<gated>.*?)^```\{exercise-end\}",
                      re.MULTILINE | re.DOTALL)
SOLUTION = re.compile(r"^```\{solution-start\}[^\n]*\n(?P<gated>.*?)^```\{solution-end\}"
                      r"|^(?P<fence>`{3,}|:{3,})\{solution\}[^\n]*\n(?P<body>.*?)^(?P=fence)[ \t]*$",
                      re.MULTILINE | re.DOTALL)


def words(text):
    return " ".join(text.split())


def paragraphs(markdown):
    """The prose of a directive's body: paragraphs, without options and fences."""
    lines = [line for line in markdown.splitlines()
             if not re.match(r"\s*(:[A-Za-z-]+:|```|:::)", line)]
    return [words(p) for p in re.split(r"\n\s*\n", "\n".join(lines)) if p.strip()]


def split_cells(text):
    """Code-cell sources (visible, hidden) of a stretch of MyST, and its prose."""
    visible, hidden = [], []
    for cell in CODE_CELL.finditer(text):
        (hidden if "remove-cell" in cell["options"] else visible).append(cell["source"].strip())
    return visible, hidden, paragraphs(CODE_CELL.sub("", text))


class Parsed:
    """A lecture's exercises and solutions, read from its text."""

    def __init__(self, lecture):
        text = lecture.read_text()
        self.exercises = [(m["body"] if m["body"] is not None else m["gated"])
                          for m in EXERCISE.finditer(text)]
        self.solutions = [split_cells(m["gated"] if m["gated"] is not None else m["body"])
                          for m in SOLUTION.finditer(text)]
        self.hidden = [c.source.strip() for c in jupytext.read(lecture).cells
                       if "remove-cell" in c.metadata.get("tags", [])]


def load(folder, lecture):
    path = folder / f"{lecture.stem}.ipynb"
    assert path.exists(), f"{path} missing: run tools/sync-notebooks"
    return nbformat.read(path, as_version=4)


def code(nb):
    return [c.source.strip() for c in nb.cells if c.cell_type == "code"]


def prose(nb):
    return words(" ".join(c.source for c in nb.cells if c.cell_type == "markdown"))


def cells(nb):
    return [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in nb.cells]


@pytest.fixture(scope="module", params=LECTURES, ids=lambda p: p.stem)
def lecture(request):
    return request.param


def test_the_lectures_have_exercises_and_solutions_to_check():
    parsed = [Parsed(lecture) for lecture in LECTURES]
    assert all(p.exercises for p in parsed)
    assert sum(len(p.solutions) for p in parsed) >= 15
    assert sum(len(p.hidden) for p in parsed) >= 60


def test_student_notebook_has_no_hidden_cell_and_no_solution(lecture):
    nb, parsed = load(STUDENT, lecture), Parsed(lecture)
    assert not [c for c in nb.cells if "remove-cell" in c.metadata.get("tags", [])]
    markdown = prose(nb)
    assert "{solution" not in markdown and "Solution to exercise" not in markdown
    assert not set(parsed.hidden) & set(code(nb)), "a hidden test cell is in the student notebook"
    for visible, hidden, text in parsed.solutions:
        assert not set(visible + hidden) & set(code(nb)), "a solution's cell is in the student notebook"
        assert not [p for p in text if p in markdown], "a solution's text is in the student notebook"


def test_student_notebook_states_every_exercise(lecture):
    nb, parsed = load(STUDENT, lecture), Parsed(lecture)
    markdown = prose(nb)
    headings = re.findall(r"\*\*Exercise (\d+)\*\*", markdown)
    assert headings == [str(n) for n in range(1, len(parsed.exercises) + 1)]
    assert "{exercise" not in markdown  # rendered as plain Markdown, which Colab shows
    for body in parsed.exercises:
        for paragraph in paragraphs(body):
            assert paragraph in markdown, f"exercise text missing: {paragraph[:80]}"


def test_instructor_notebook_has_every_solution(lecture):
    nb, parsed = load(INSTRUCTOR, lecture), Parsed(lecture)
    student = load(STUDENT, lecture)
    markdown = prose(nb)
    assert not [c for c in nb.cells if "remove-cell" in c.metadata.get("tags", [])]
    assert len(re.findall(r"\*\*Solution to exercise \d+\*\*", markdown)) == len(parsed.solutions)
    assert len(re.findall(r"\*End of the solution to exercise \d+\.\*", markdown)) == len(parsed.solutions)
    solution_code = []
    for visible, hidden, text in parsed.solutions:
        assert not set(hidden) & set(code(nb))
        solution_code += visible
        for paragraph in text:
            assert paragraph in markdown, f"solution text missing: {paragraph[:80]}"
    for body in parsed.exercises:
        assert all(p in markdown for p in paragraphs(body))
    # The instructor notebook is the student notebook plus the solutions, in order.
    assert [c for c in code(nb) if c not in solution_code] == code(student)
    assert [c for c in code(nb) if c in solution_code] == solution_code


@pytest.mark.parametrize("folder, make", [(STUDENT, "student_notebook"),
                                          (INSTRUCTOR, "instructor_notebook")],
                         ids=["student", "instructor"])
def test_notebook_is_what_the_sync_tool_makes_of_the_lecture(lecture, folder, make):
    expected, actual = SYNC[make](lecture), load(folder, lecture)
    assert cells(actual) == cells(expected), f"{folder.name}/{lecture.stem}.ipynb is stale: run tools/sync-notebooks"
    assert actual.metadata == expected.metadata


def test_one_notebook_per_lecture_in_each_set():
    names = {p.stem for p in LECTURES}
    assert {p.stem for p in STUDENT.glob("*.ipynb")} == names
    assert {p.stem for p in INSTRUCTOR.glob("*.ipynb")} == names
    assert {p.name for p in STUDENT.iterdir()} <= {f"{n}.ipynb" for n in names} | {"instructor"}


def test_every_lecture_is_in_the_toc():
    toc = (ROOT / "_toc.yml").read_text()
    for lecture in LECTURES:
        assert f"lectures/{lecture.stem}" in toc


def test_the_book_build_leaves_the_notebooks_out():
    config = (ROOT / "_config.yml").read_text()
    assert re.search(r"^only_build_toc_files: true$", config, re.MULTILINE)
    assert re.search(r"^exclude_patterns:\n(  - .*\n)*  - notebooks\n", config, re.MULTILINE)


TINY = """\
---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
    format_version: 0.13
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

# Tiny

```{code-cell} ipython3
x = 1
```

```{code-cell} ipython3
:tags: [remove-cell]

assert x == 1
```

## Exercises

```{exercise}
:label: t_ex1

Compute $x + 1$.
```

```{solution-start} t_ex1
:class: dropdown
```

Add one.

```{code-cell} ipython3
y = x + 1
```

```{code-cell} ipython3
:tags: [remove-cell]

assert y == 2
```

```{solution-end}
```

:::{exercise} A title
:label: t_ex2

Double it, then print it:

```python
print(2 * x)
```
:::

::::{solution} t_ex2
:class: dropdown

It is `2 * x`: see {ref}`t_ex2`.
::::

```{exercise-start}
:label: t_ex3
```

Say why.

```{exercise-end}
```

Closing words.
"""


def test_the_sync_tool_on_every_kind_of_markup(tmp_path):
    (tmp_path / "lectures").mkdir()
    (tmp_path / "lectures" / "tiny.md").write_text(TINY)
    (tmp_path / "notebooks").mkdir()
    stale = tmp_path / "notebooks" / "gone.ipynb"
    stale.write_text("{}")
    written = SYNC["sync"](tmp_path)
    assert stale in written and not stale.exists()
    student = nbformat.read(tmp_path / "notebooks" / "tiny.ipynb", as_version=4)
    instructor = nbformat.read(tmp_path / "notebooks" / "instructor" / "tiny.ipynb", as_version=4)
    assert code(student) == ["x = 1"]
    assert code(instructor) == ["x = 1", "y = x + 1"]
    assert prose(student) == words("""# Tiny ## Exercises **Exercise 1** (`t_ex1`) Compute $x + 1$.
        **Exercise 2** (`t_ex2`): A title Double it, then print it: ```python print(2 * x) ```
        **Exercise 3** (`t_ex3`) Say why. Closing words.""")
    assert prose(instructor) == words("""# Tiny ## Exercises **Exercise 1** (`t_ex1`) Compute $x + 1$.
        **Solution to exercise 1** (`t_ex1`) Add one. *End of the solution to exercise 1.*
        **Exercise 2** (`t_ex2`): A title Double it, then print it: ```python print(2 * x) ```
        **Solution to exercise 2** (`t_ex2`) It is `2 * x`: see {ref}`t_ex2`.
        *End of the solution to exercise 2.*
        **Exercise 3** (`t_ex3`) Say why. Closing words.""")
    assert "jupytext" not in student.metadata and student.metadata.kernelspec.name == "python3"
    # A second sync changes nothing; an edit changes the edited cell only, ids stay.
    assert SYNC["sync"](tmp_path) == []
    ids = [c.id for c in student.cells]
    lecture = tmp_path / "lectures" / "tiny.md"
    lecture.write_text(TINY.replace("x = 1\n", "x = 2\n", 1))
    assert SYNC["sync"](tmp_path) == [tmp_path / "notebooks" / "tiny.ipynb",
                                      tmp_path / "notebooks" / "instructor" / "tiny.ipynb"]
    again = nbformat.read(tmp_path / "notebooks" / "tiny.ipynb", as_version=4)
    assert code(again) == ["x = 2"] and [c.id for c in again.cells] == ids
    # A solution that never ends is an error, not a notebook without the rest of the lecture.
    lecture.write_text(TINY.replace("```{solution-end}\n```\n", ""))
    with pytest.raises(ValueError, match="no {solution-end}"):
        SYNC["sync"](tmp_path)
