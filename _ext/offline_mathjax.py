"""Serve MathJax from the built site, so the book typesets maths without a network.

Sphinx loads MathJax from a CDN by default; a classroom without internet, a
saved copy of the site or a sandboxed browser then shows raw TeX. This
extension copies MathJax 3.2.2 from the pinned pip package
``django-static-mathjax`` (no download at build time) into
``_build/html/_static/<dir of mathjax_path>/``, and ``mathjax_path`` in
``_config.yml`` points the pages at that copy.

Only what the pages use is copied (the package holds 43 MB):

* ``tex-mml-chtml.js``: the combined component Sphinx loads (TeX and MathML
  input, CommonHTML output, the menu and assistive MathML built in);
* ``output/chtml/fonts/woff-v2/*.woff``: the fonts the CommonHTML output
  asks for by URL relative to that file;
* ``input/tex/extensions/*.js``: TeX packages that MathJax's ``autoload``
  fetches the first time a page uses one of their macros (``\\boldsymbol``,
  ``\\cancel`` ...), about 0.5 MB;
* ``a11y/*.js`` and the speech rules ``sre/mathmaps/*.json`` (4.3 MB): what
  the context menu loads when a reader switches on *Accessibility > Explorer*
  (formulas read aloud and explored step by step, in each of the menu's
  languages). Without them the maths still shows, but the Explorer has
  nothing to say;
* ``LICENSE`` (Apache-2.0, which asks that redistributions carry it).

Left out: the SVG output, the other combined components, the TypeScript and
node sources: 6.4 MB is copied. ``tools/check-offline-math`` proves the copy
is enough for the pages as they load: it opens built pages in headless
Chromium with networking disabled and counts typeset formulas;
``tests/test_site.py`` also checks that the Explorer speaks when the site is
served. (Opened from disk, Chromium refuses MathJax's requests for the speech
rules, as it would from a CDN copy: the Explorer needs the site served, e.g.
``python -m http.server -d _build/html``.)
"""

from importlib.util import find_spec
from pathlib import Path, PurePosixPath
import shutil

from sphinx.errors import ExtensionError

PATTERNS = (
    "tex-mml-chtml.js",
    "output/chtml/fonts/woff-v2/*.woff",
    "input/tex/extensions/*.js",
    "a11y/*.js",
    "sre/mathmaps/*.json",
)


def mathjax_root() -> Path:
    """The ``mathjax`` folder of the installed django-static-mathjax package."""
    spec = find_spec("mathjax")
    if spec is None or spec.origin is None:
        raise ExtensionError(
            "offline_mathjax: the package django-static-mathjax is not installed; "
            "pip install -r requirements.txt")
    root = Path(spec.origin).parent / "static" / "mathjax"
    if not (root / "es5" / "tex-mml-chtml.js").is_file():
        raise ExtensionError(f"offline_mathjax: no es5/tex-mml-chtml.js under {root}")
    return root


def files_to_copy(root: Path) -> list[Path]:
    """Paths relative to ``root/es5`` of every file the pages need."""
    es5 = root / "es5"
    found = sorted({p.relative_to(es5) for pattern in PATTERNS for p in es5.glob(pattern)})
    for pattern in PATTERNS:
        if not any(PurePosixPath(p.as_posix()).match(pattern) for p in found):
            raise ExtensionError(f"offline_mathjax: nothing matches {pattern} under {es5}")
    return found


def _check_config(app, config):
    path = config.mathjax_path
    if "://" in path or path.startswith("/") or not path.endswith("/tex-mml-chtml.js"):
        raise ExtensionError(
            f"offline_mathjax: mathjax_path must be a path inside _static ending in "
            f"/tex-mml-chtml.js (e.g. mathjax/tex-mml-chtml.js), not {path!r}")


def _copy(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    root = mathjax_root()
    target = Path(app.outdir) / "_static" / PurePosixPath(app.config.mathjax_path).parent
    for relative in files_to_copy(root):
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / "es5" / relative, destination)
    shutil.copyfile(root / "LICENSE", target / "LICENSE")


def setup(app):
    app.connect("config-inited", _check_config)
    app.connect("build-finished", _copy)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
