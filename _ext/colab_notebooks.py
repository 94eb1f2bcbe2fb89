"""Point the Colab launch button at the student notebook ``notebooks/<name>.ipynb``.

Colab opens ``.ipynb`` files only, while the lectures are MyST Markdown. The
repository therefore keeps, generated from every lecture by
``tools/sync-notebooks``, a student notebook in ``notebooks/`` (no hidden test
cells, no solutions) and an instructor notebook with the solutions in
``notebooks/instructor/``; ``tests/test_notebooks_in_sync.py`` keeps both in
sync. This extension rewrites the link that sphinx-book-theme builds for the
``.md`` file so that the button opens the student notebook.
"""

from pathlib import PurePosixPath


def _rewrite(buttons, pagename):
    for button in buttons:
        if button.get("text") == "Colab":
            # .../blob/<branch>/lectures/<name>.md -> .../blob/<branch>/notebooks/<name>.ipynb
            # (the student notebook; never notebooks/instructor/)
            prefix, _, _ = button["url"].partition(f"/{pagename}.")
            button["url"] = f"{prefix}/notebooks/{PurePosixPath(pagename).name}.ipynb"
        _rewrite(button.get("buttons", []), pagename)


def _colab_to_notebooks(app, pagename, templatename, context, doctree):
    _rewrite(context.get("header_buttons", []), pagename)


def setup(app):
    app.connect("html-page-context", _colab_to_notebooks, priority=502)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
