"""The book's notebook templates as a reader meets them, checked without a browser.

What ``tests/test_browser.py`` measures on the rendered pages, these tests hold in the templates
(``notebooks/``) and their executed copies (``book/``), in seconds and on any machine:

- every figure is a numbered figure: a cell that draws an image carries MyST-NB's
  ``mystnb.figure`` (a ``name`` to reference it and a ``caption``) and ``mystnb.image.alt``, and
  draws exactly one image and no other rich output (MyST-NB wraps each one in the figure);
- visible code fits the code cell at 1280 px (a 685 px column, about 80 monospace characters:
  measured in the rendered book): at most :data:`WIDTH` characters a line, hidden cells excepted;
- test scaffolding stays for nbval but is hidden from readers: a cell with a top-level
  ``assert`` or nbval's ``nbval-check-output`` tag carries ``hide-cell`` (or ``remove-cell``).
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = sorted((ROOT / "notebooks").glob("*.ipynb"))
WIDTH = 80
HIDDEN = {"hide-input", "hide-cell", "remove-cell", "remove-input"}
RICH = ("image/png", "image/svg+xml", "image/jpeg", "text/html", "text/markdown", "text/latex")


def _code_cells(path: Path) -> list:
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def _tags(cell) -> set[str]:
    return set(cell.metadata.get("tags", []))


def _images(cell) -> int:
    return sum(1 for o in cell.get("outputs", []) for m in ("image/png", "image/svg+xml")
               if m in o.get("data", {}))


def _rich_outputs(cell) -> int:
    return sum(1 for o in cell.get("outputs", [])
               if o.get("output_type") in ("display_data", "execute_result")
               and any(m in o.get("data", {}) for m in RICH))


def _figure_problems(template: Path) -> list[str]:
    executed = ROOT / "book" / template.name
    if not executed.exists():
        return []
    ran = _code_cells(executed)
    problems = []
    for i, (cell, out) in enumerate(zip(_code_cells(template), ran)):
        if cell.source != out.source:
            continue  # a stale executed copy: make book re-executes it
        meta = cell.metadata.get("mystnb", {})
        figure, alt = meta.get("figure", {}), meta.get("image", {}).get("alt", "")
        if _images(out) and not (figure.get("name") and figure.get("caption")):
            problems.append(f"code cell {i} draws an image without mystnb.figure name+caption")
        if _images(out) and (not alt or re.fullmatch(r"[\w./-]+\.(png|svg)|[0-9a-f]{16,}", alt)):
            problems.append(f"code cell {i} draws an image without alt text (mystnb.image.alt)")
        if figure and _rich_outputs(out) > 1:
            problems.append(f"code cell {i} is a figure with {_rich_outputs(out)} rich outputs: "
                            "each would be wrapped in the figure")
    return problems


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.stem)
def test_every_figure_is_numbered_captioned_and_described(template):
    assert not _figure_problems(template)


def test_figure_names_are_unique_across_the_book():
    names = [c.metadata["mystnb"]["figure"]["name"] for t in TEMPLATES for c in _code_cells(t)
             if c.metadata.get("mystnb", {}).get("figure", {}).get("name")]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.stem)
def test_visible_code_fits_the_code_cell(template):
    long = [f"cell {i}: {line!r} ({len(line)} characters)"
            for i, cell in enumerate(_code_cells(template)) if not _tags(cell) & HIDDEN
            for line in cell.source.splitlines() if len(line) > WIDTH]
    assert not long, f"wider than {WIDTH} characters:\n" + "\n".join(long)


def _is_check(cell) -> bool:
    """nbval's checked cell, or a cell of checks: at least half its top-level statements are
    ``assert`` (an ``assert`` guarding a computation does not make it one)."""
    statements = [line for line in cell.source.splitlines()
                  if re.match(r"[A-Za-z_]", line) and not line.startswith(("else", "elif"))]
    asserts = [line for line in statements if re.match(r"assert\b", line)]
    return "nbval-check-output" in _tags(cell) or (bool(asserts)
                                                   and 2 * len(asserts) >= len(statements))


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.stem)
def test_test_scaffolding_is_hidden_from_readers(template):
    shown = [i for i, cell in enumerate(_code_cells(template))
             if _is_check(cell) and not _tags(cell) & {"hide-cell", "remove-cell"}]
    assert not shown, f"code cells {shown} check the page but are shown to readers"


def test_the_checks_catch_each_defect(tmp_path, monkeypatch):
    """The checks fail on a template with one defect of each kind."""
    nb = nbformat.v4.new_notebook()
    draw = nbformat.v4.new_code_cell("plot()", outputs=[nbformat.v4.new_output(
        "display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"})])
    nb.cells = [draw, nbformat.v4.new_code_cell("assert True\nx = 1  " + "#" * WIDTH)]
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "book").mkdir()
    template = tmp_path / "notebooks" / "page.ipynb"
    nbformat.write(nb, template)
    nbformat.write(nb, tmp_path / "book" / "page.ipynb")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert len(_figure_problems(template)) == 2
    with pytest.raises(AssertionError, match="wider than"):
        test_visible_code_fits_the_code_cell(template)
    with pytest.raises(AssertionError, match="shown to readers"):
        test_test_scaffolding_is_hidden_from_readers(template)
    draw.metadata["mystnb"] = {"figure": {"name": "fig-x", "caption": "A caption."},
                               "image": {"alt": "A line rising."}}
    draw.metadata["tags"] = ["hide-input"]
    nbformat.write(nb, template)
    nbformat.write(nb, tmp_path / "book" / "page.ipynb")
    assert _figure_problems(template) == []
