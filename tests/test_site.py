"""The website: maths offline, code that fits its column, the benchmarks appendix, one
repository address, the Pages workflow.

A small book is built once (module fixture) with the project's own _config.yml,
_ext/ and benchmark results, and a page of maths plus a two-cell lecture (one cell
hidden behind a toggle).
The browser tests skip when no Chromium is installed (apt-get install chromium).
"""

from __future__ import annotations

import ast
import contextlib
import functools
import html
import http.server
import importlib.machinery
import importlib.metadata
import importlib.util
import re
import shutil
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import jupytext
import pytest
import yaml
from IPython.core.inputtransformer2 import TransformerManager

ROOT = Path(__file__).resolve().parent.parent
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
REPOSITORY = CONFIG["repository"]["url"]


def load_tool(name):
    """Import one of tools/ (Python scripts without a .py suffix) as a module."""
    path = ROOT / "tools" / name
    loader = importlib.machinery.SourceFileLoader(name.replace("-", "_"), str(path))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


check_offline_math = load_tool("check-offline-math")
check_code_width = load_tool("check-code-width")
set_repository_url = load_tool("set-repository-url")
sys.path.insert(0, str(ROOT / "_ext"))
import benchmark_results  # noqa: E402
import offline_mathjax  # noqa: E402

needs_chromium = pytest.mark.skipif(
    check_offline_math.find_browser() is None,
    reason="no Chromium on PATH (apt-get install chromium): the browser checks cannot run")

MATHS_PAGE = r"""# Maths

Inline $x_{t+1} = A x_t + C w_{t+1}$ and a display that needs a TeX package
MathJax loads on demand (boldsymbol):

$$
\boldsymbol{\theta} = \arg\max_\theta \log p(y \mid \theta)
$$
"""

LECTURE = """---
jupytext:
  text_representation: {extension: .md, format_name: myst}
kernelspec: {display_name: Python 3, language: python, name: python3}
---

# Tiny lecture

```{code-cell} ipython3
1 + 1
```

```{code-cell} ipython3
:tags: [hide-cell]

print("hidden")
```
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A small book built with the project's configuration and extensions."""
    book = tmp_path_factory.mktemp("book")
    for name in ("_config.yml", "references.bib"):
        shutil.copy(ROOT / name, book / name)
    shutil.copytree(ROOT / "_ext", book / "_ext", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "benchmarks" / "results", book / "benchmarks" / "results")
    for script in (ROOT / "benchmarks").glob("bench_*.py"):
        shutil.copy(script, book / "benchmarks" / script.name)
    (book / "appendix").mkdir()
    shutil.copy(ROOT / "appendix" / "benchmarks.md", book / "appendix" / "benchmarks.md")
    (book / "lectures").mkdir()
    (book / "lectures" / "tiny.md").write_text(LECTURE)
    (book / "intro.md").write_text(MATHS_PAGE)
    (book / "_toc.yml").write_text(
        "format: jb-book\nroot: intro\nchapters:\n"
        "  - file: lectures/tiny\n  - file: appendix/benchmarks\n")
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    result = subprocess.run([str(jupyter_book), "build", str(book), "-W", "-n", "--keep-going"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return book / "_build" / "html"


# --- maths offline ----------------------------------------------------------------

def test_mathjax_copy_is_what_the_pages_need_and_small():
    root = offline_mathjax.mathjax_root()
    files = {p.as_posix() for p in offline_mathjax.files_to_copy(root)}
    fonts = {f"output/chtml/fonts/woff-v2/{p.name}"
             for p in (root / "es5/output/chtml/fonts/woff-v2").glob("*.woff")}
    assert "tex-mml-chtml.js" in files
    assert len(fonts) >= 20 and fonts <= files
    assert "input/tex/extensions/boldsymbol.js" in files
    assert {"a11y/explorer.js", "sre/mathmaps/en.json"} <= files
    size = sum((root / "es5" / f).stat().st_size for f in files)
    assert size < 7e6, f"{size / 1e6:.1f} MB copied; the package holds 43 MB"


def test_config_loads_mathjax_from_the_site():
    path = CONFIG["sphinx"]["config"]["mathjax_path"]
    assert "://" not in path and path.endswith("tex-mml-chtml.js")
    assert "offline_mathjax" in CONFIG["sphinx"]["local_extensions"]


def test_built_pages_reference_nothing_on_the_network(site):
    page = (site / "intro.html").read_text()
    assert '<script defer="defer" src="_static/mathjax/tex-mml-chtml.js"></script>' in page
    assert (site / "_static/mathjax/tex-mml-chtml.js").is_file()
    assert (site / "_static/mathjax/LICENSE").is_file()
    external = re.compile(r'<(?:script|link|img)\b[^>]*\b(?:src|href)="(?:https?:)?//[^"]*"')
    for html in site.rglob("*.html"):
        assert not external.findall(html.read_text()), html


@needs_chromium
def test_offline_check_passes_on_the_built_site(site, capsys):
    assert check_offline_math.main([str(site / "intro.html")]) == 0
    assert "2 formulas typeset offline" in capsys.readouterr().out


@needs_chromium
def test_offline_check_fails_without_the_fonts(site, tmp_path):
    copy = shutil.copytree(site, tmp_path / "html")
    shutil.rmtree(copy / "_static/mathjax/output")
    problems = check_offline_math.check_page(check_offline_math.find_browser(),
                                             copy / "intro.html", 120)
    assert any("fonts failed to load" in p for p in problems), problems


@needs_chromium
def test_offline_check_fails_without_a_tex_package(site, tmp_path):
    copy = shutil.copytree(site, tmp_path / "html")
    (copy / "_static/mathjax/input/tex/extensions/boldsymbol.js").unlink()
    problems = check_offline_math.check_page(check_offline_math.find_browser(),
                                             copy / "intro.html", 120)
    assert any("not typeset" in p for p in problems), problems


@contextlib.contextmanager
def web_server(folder):
    """Serve ``folder`` on a free loopback port; yields (base URL, list of paths requested)."""
    requested = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requested.append(self.path)

    handler = functools.partial(Handler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", requested
    finally:
        server.shutdown()


@needs_chromium
def test_accessibility_explorer_works_when_the_site_is_served(site, tmp_path):
    """A reader who switched on the menu's Explorer: MathJax loads the speech rules from
    the site, and every formula gets its spoken form (empty without them)."""
    copy = shutil.copytree(site, tmp_path / "html")
    setting = "<script>window.MathJax.options.menuOptions = {settings: {explorer: true}};</script>"
    (copy / "explorer.html").write_text((copy / "intro.html").read_text().replace(
        '<script defer="defer" src="_static/mathjax', setting + '<script defer="defer" src="_static/mathjax'))
    browser = check_offline_math.find_browser()
    with web_server(copy) as (base, requested):
        text = check_offline_math.dump_dom(browser, f"{base}/explorer.html", 120, offline=False)
    dom = check_offline_math.scan(text)
    assert dom.math == dom.typeset == 2
    assert "/_static/mathjax/a11y/explorer.js" in requested
    assert "/_static/mathjax/sre/mathmaps/en.json" in requested
    spoken = re.findall(r'<mjx-container[^>]*\baria-label="([^"]*)"', text)
    assert len(spoken) == 2 and spoken[0].startswith("x Subscript t plus 1"), spoken


@needs_chromium
def test_offline_check_really_has_no_network(site, tmp_path):
    """MathJax's components fetched from a live local web server: fine with the network,
    not under the check (even loopback is cut off)."""
    copy = shutil.copytree(site, tmp_path / "html")
    with web_server(copy) as (base, _):
        served = f"{base}/_static/mathjax"
        page = copy / "remote.html"
        config = (f'<script>window.MathJax = Object.assign(window.MathJax || {{}}, '
                  f'{{loader: {{paths: {{mathjax: "{served}"}}}}}});</script>')
        page.write_text((copy / "intro.html").read_text().replace(
            '<script defer="defer" src="_static/mathjax', config + '<script defer="defer" src="_static/mathjax'))
        browser = check_offline_math.find_browser()
        online = check_offline_math.scan(check_offline_math.dump_dom(browser, page, 120, offline=False))
        assert online.math == online.typeset == 2  # the control: served components work
        problems = check_offline_math.check_page(browser, page, 120)
        assert any("not typeset" in p for p in problems), problems


def test_offline_check_skips_without_a_browser(monkeypatch, capsys):
    monkeypatch.setattr(check_offline_math, "find_browser", lambda: None)
    assert check_offline_math.main(["anything.html"]) == 0
    assert capsys.readouterr().out.startswith("SKIP check-offline-math: no Chromium")


# --- code fits its column -------------------------------------------------------

def code_blocks(page):
    """The opening tag and first text of each code block (div.highlight pre) of ``page``,
    in page order: the tiny lecture's input, its output "2", the hidden cell's input and
    its output "hidden"."""
    return list(re.finditer(r'<div class="highlight"><pre>(?:<span></span>)?', page.read_text()))


def with_code_line(site, folder, block, line):
    """A copy of the built site whose tiny lecture shows ``line`` first in code block
    number ``block`` (1-based, see code_blocks)."""
    copy = shutil.copytree(site, folder)
    page = copy / "lectures" / "tiny.html"
    opening = code_blocks(page)[block - 1]
    text = page.read_text()
    page.write_text(text[:opening.end()] + html.escape(line) + "\n" + text[opening.end():])
    return page


@needs_chromium
def test_code_width_check_passes_on_the_built_site(site, capsys):
    assert check_code_width.main([str(site)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"ok +\S+lectures/tiny\.html: 4 code blocks, 0 too wide", out), out
    assert re.search(r"ok +\S+appendix/benchmarks\.html: \d+ code blocks, 0 too wide", out), out


@needs_chromium
@pytest.mark.parametrize("block, kind", [(1, "input"), (2, "output"), (3, "input")],
                         ids=["input", "output", "hidden-cell input"])
def test_code_width_check_fails_on_one_line_too_long(site, tmp_path, capsys, block, kind):
    """A line one character longer than the column fails, naming page, block and line;
    a line exactly as long as the column passes (the check measures, it does not guess)."""
    browser = check_code_width.find_browser()
    page = site / "lectures" / "tiny.html"
    assert len(code_blocks(page)) == 4
    measured = check_code_width.measure(browser, page, 120, (1280, 900))["blocks"]
    assert [b["kind"] for b in measured] == ["input", "output", "input", "output"]
    columns = measured[block - 1]["columns"]
    assert 60 <= columns <= 100, columns  # a code column, not a collapsed or page-wide box

    def line(n):
        return "total = '" + "x" * (n - 10) + "'"

    fits = with_code_line(site, tmp_path / "fits", block, line(columns))
    assert check_code_width.check_page(browser, fits, 120) == []
    too_long = with_code_line(site, tmp_path / "long", block, line(columns + 1))
    capsys.readouterr()
    assert check_code_width.main([str(too_long)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL {too_long}: block {block} ({kind};" in out, out
    assert f"line 1 ({columns + 1} chars): {line(columns + 1)}" in out, out
    assert "1 code line(s) wider than their column" in out
    assert ("in a toggle (hidden cell)" in out) == (block == 3)


def test_code_width_check_skips_without_a_browser(monkeypatch, capsys):
    monkeypatch.setattr(check_code_width, "find_browser", lambda: None)
    assert check_code_width.main(["anything.html"]) == 0
    assert capsys.readouterr().out.startswith("SKIP check-code-width: no Chromium")


# --- benchmarks appendix ----------------------------------------------------------

def test_every_results_file_is_on_the_benchmarks_page(site):
    page = (site / "appendix" / "benchmarks.html").read_text()
    text = html.unescape(re.sub(r"<[^>]+>", "", page)).replace("\u2019", "'")  # smart quotes
    results = benchmark_results.results_files(ROOT)
    assert [p.stem for p in results][:1] == ["kalman"]
    for table in results:
        title = table.read_text().lstrip().splitlines()[0].removeprefix("# ")
        assert title in text, title
        assert f"benchmarks/results/{table.name}" in text
    for csv in (ROOT / "benchmarks" / "results").glob("*.csv"):
        assert re.search(rf'href="\.\./_downloads/\w+/{re.escape(csv.name)}"', page), csv.name
    for figure in (ROOT / "benchmarks" / "results").glob("*.png"):
        assert (site / "_images" / figure.name).is_file()
        assert f"_images/{figure.name}" in page
    # A number from the committed table reaches the page unchanged.
    first_row = next(line for line in (ROOT / "benchmarks/results/kalman.md").read_text().splitlines()
                     if line.startswith("| source"))
    assert first_row.split("|")[6].strip() in page


def test_results_sections_say_when_they_were_committed(tmp_path):
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    (results / "hmc.md").write_text("# HMC\n\n| a |\n|---|\n| 1 |\n")
    (results / "kalman.md").write_text("no title\n")
    text = benchmark_results.results_myst(tmp_path)
    assert text.index("kalman.md") < text.index("hmc.md")  # reading order, not alphabetical
    assert "## kalman" in text  # a file without a title gets one
    assert "commit date unknown" in text  # not a git clone


# --- one repository address -------------------------------------------------------

def test_repository_url_is_one_setting_that_every_copy_follows():
    assert set_repository_url.configured_url(ROOT) == REPOSITORY
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", REPOSITORY)
    for lecture in sorted((ROOT / "lectures").glob("*.md")):
        first_code = next(c for c in jupytext.read(lecture).cells if c.cell_type == "code")
        assert f"lecture_utils[lectures] @ git+{REPOSITORY}" in string_literals(
            first_code.source), f"{lecture.name}: install cell"
    # The clone command, with or without a folder name after the address.
    assert re.search(rf"git clone {re.escape(REPOSITORY)}[ \n]", (ROOT / "intro.md").read_text())
    others = {u for path in set_repository_url.files_holding(ROOT, "https://github.com/")
              for u in set_repository_url.URL.findall(path.read_text())} - {REPOSITORY}
    assert not {u for u in others if u.split("/")[-1] == REPOSITORY.split("/")[-1]}, others


def string_literals(source: str) -> set[str]:
    """The strings a cell spells out, as Python reads them: adjacent literals, which
    keep a long address within the code column, are one string."""
    tree = ast.parse(TransformerManager().transform_cell(source))
    return {node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)}


def top_level_imports(source: str) -> set[str]:
    """The top-level modules a cell imports (IPython syntax such as %timeit allowed)."""
    tree = ast.parse(TransformerManager().transform_cell(source))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_install_cells_check_and_install_what_each_lecture_imports():
    """Each lecture's install cell (its first code cell) checks for lecture_utils and for every
    module the lecture imports beyond the standard library and the package's dependencies, and
    each of those comes with the package's extra "lectures", which the cell installs. It may
    check for more (lecture 4 needs blackjax through lecture_utils.sampling) from the extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(requirements):
        return {re.match(r"[A-Za-z0-9._-]+", r).group().lower().replace("_", "-")
                for r in requirements}

    core, extra = names(project["dependencies"]), names(project["optional-dependencies"]["lectures"])
    distributions = importlib.metadata.packages_distributions()

    def distribution(module):
        return {d.lower().replace("_", "-") for d in distributions.get(module, [module])}

    for lecture in sorted((ROOT / "lectures").glob("*.md")):
        install, *cells = [c.source for c in jupytext.read(lecture).cells if c.cell_type == "code"]
        needed = re.search(r"^needed = (\[.*?\])$", install, re.MULTILINE | re.DOTALL)
        assert needed, f"{lecture.name}: the install cell has no `needed = [...]`"
        checked = set(ast.literal_eval(needed.group(1)))
        imported = set().union(*map(top_level_imports, cells)) - set(sys.stdlib_module_names)
        beyond = {m for m in imported - {"lecture_utils"} if not distribution(m) & core}
        assert "lecture_utils" in checked and beyond <= checked, (lecture.name, beyond - checked)
        for module in checked - {"lecture_utils"}:
            assert distribution(module) & extra, f"{lecture.name}: {module} is not in the extra"
        assert "importlib.util.find_spec(name) is None for name in needed" in install


def test_set_repository_url_rewrites_every_copy(tmp_path):
    for name in ("_config.yml", "intro.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    for folder in ("lectures", "notebooks"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    (tmp_path / "lectures" / "longer.md").write_text(f"{REPOSITORY}-extra\n")
    new = "https://github.com/someone/their-fork"
    assert set_repository_url.main([new + "/"], root=tmp_path) == 2
    assert set_repository_url.main([new], root=tmp_path) == 0
    assert yaml.safe_load((tmp_path / "_config.yml").read_text())["repository"]["url"] == new
    assert not set_repository_url.files_holding(tmp_path, REPOSITORY)
    assert (tmp_path / "lectures" / "longer.md").read_text() == f"{REPOSITORY}-extra\n"
    for notebook in (tmp_path / "notebooks").glob("*.ipynb"):
        assert f"git+{new}" in notebook.read_text()


def test_colab_button_opens_the_notebook_copy_in_the_repository(site):
    page = (site / "lectures" / "tiny.html").read_text()
    owner_name = REPOSITORY.removeprefix("https://github.com/")
    branch = CONFIG["repository"]["branch"]
    colab = f"https://colab.research.google.com/github/{owner_name}/blob/{branch}/notebooks/tiny.ipynb"
    assert colab in page
    assert f'href="{REPOSITORY}"' in page  # the repository button


# --- the GitHub Pages workflow ----------------------------------------------------

def readme_build_command():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.DOTALL)
    command = next(b.strip() for b in blocks if "jupyter-book build" in b)
    assert "\n" not in command
    return command


def test_pages_workflow_runs_the_readme_build_and_publishes_it():
    workflow = yaml.safe_load((ROOT / ".github/workflows/book.yml").read_text())
    trigger = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare on: as True
    assert trigger["push"]["branches"] == ["main"]
    assert workflow["permissions"]["pages"] == "write"
    assert workflow["permissions"]["id-token"] == "write"
    build = workflow["jobs"]["build"]["steps"]
    python = next(s for s in build if s.get("uses", "").startswith("actions/setup-python@"))
    assert str(python["with"]["python-version"]) == "3.11"
    runs = [s["run"].strip() for s in build if "run" in s]
    assert readme_build_command() in runs
    upload = next(s for s in build if s.get("uses", "").startswith("actions/upload-pages-artifact@"))
    assert upload["with"]["path"] == "_build/html"
    assert runs.index(readme_build_command()) < build.index(upload)
    deploy = workflow["jobs"]["deploy"]
    assert deploy["needs"] == "build"
    assert any(s.get("uses", "").startswith("actions/deploy-pages@") for s in deploy["steps"])


def test_appendix_pages_are_in_the_toc():
    toc = (ROOT / "_toc.yml").read_text()
    for page in ("appendix/instructors", "appendix/benchmarks"):
        assert f"file: {page}" in toc
