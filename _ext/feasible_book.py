"""Sphinx extension of the book (loaded by _config.yml's ``sphinx.local_extensions``).

- A build stamp on every page: the commit the book was rendered from (and whether tracked files
  had local changes) and the build date, appended to the footer that ``html.extra_footer`` sets.
  It is computed when the book is rendered, so no file changes from one build to the next.
  ``FEASIBLE_BUILD_COMMIT`` overrides the commit (a build outside a git clone) and
  ``SOURCE_DATE_EPOCH`` the date (reproducible builds).
- One ``<script>`` per script: jupyter-book 1.x registers sphinx-thebe's and togglebutton's inline
  configuration twice, and the second ``const THEBE_JS_URL`` is a JavaScript error on every page.
- The theme's colour mode defaults to ``auto`` (an empty default logs an error in the console).
- The book's CSS, ``_ext/static/feasible.css``: formulas, tables and code scroll inside their box,
  figures fit the screen, long identifiers break on phones.
- An author-year pybtex style, ``authoryear``: the bibliography's labels read as the text's
  citations ("Dine et al., 2025"), entries sorted by author, year and title.
"""
from __future__ import annotations

import datetime as _dt
import html
import os
import subprocess
from pathlib import Path

from pybtex.plugin import register_plugin
from pybtex.style.formatting.unsrt import Style as _UnsrtStyle
from pybtex.style.labels import BaseLabelStyle
from pybtex.style.sorting.author_year_title import SortingStyle as _AuthorYearTitle


# --- citations ---------------------------------------------------------------------------------

def _last_names(entry) -> list[str]:
    people = entry.persons.get("author") or entry.persons.get("editor") or []
    names = []
    for person in people:
        last = " ".join(person.last_names) or " ".join(person.first_names)
        if last:
            names.append(last.replace("{", "").replace("}", ""))
    return names


def author_year_label(entry) -> str:
    """"Dine et al., 2025", "Fan and Liu, 2024", "Zhou, 2025": what sphinxcontrib-bibtex's
    ``author_year`` reference style prints in the text for the same entry."""
    names = _last_names(entry)
    if not names:
        who = entry.fields.get("key", entry.key)
    elif len(names) == 1:
        who = names[0]
    elif len(names) == 2 and len(entry.persons.get("author", [])) == 2:
        who = f"{names[0]} and {names[1]}"
    else:
        who = f"{names[0]} et al."
    return f"{who}, {entry.fields.get('year', 'n.d.')}"


class AuthorYearLabelStyle(BaseLabelStyle):
    def format_labels(self, sorted_entries):
        labels = [author_year_label(entry) for entry in sorted_entries]
        counts: dict[str, int] = {}
        for label in labels:
            counts[label] = counts.get(label, 0) + 1
        seen: dict[str, int] = {}
        for label in labels:  # two works with one label: 2025a, 2025b
            if counts[label] > 1:
                seen[label] = seen.get(label, 0) + 1
                label = f"{label}{chr(ord('a') + seen[label] - 1)}"
            yield label


class AuthorYearStyle(_UnsrtStyle):
    default_label_style = AuthorYearLabelStyle
    default_sorting_style = _AuthorYearTitle


register_plugin("pybtex.style.labels", "authoryear", AuthorYearLabelStyle)
register_plugin("pybtex.style.formatting", "authoryear", AuthorYearStyle)


# --- build stamp -------------------------------------------------------------------------------

def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def build_stamp(root: Path) -> dict[str, str]:
    """The commit (short hash, '+ local changes' when tracked files differ from it) and the date."""
    commit = os.environ.get("FEASIBLE_BUILD_COMMIT") or _git(root, "rev-parse", "--short=12", "HEAD") or "unknown"
    if "FEASIBLE_BUILD_COMMIT" not in os.environ and commit != "unknown":
        if _git(root, "status", "--porcelain", "--untracked-files=no"):
            commit += " + local changes"
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = (_dt.datetime.fromtimestamp(int(epoch), _dt.timezone.utc) if epoch
            else _dt.datetime.now(_dt.timezone.utc))
    return {"commit": commit, "date": when.strftime("%Y-%m-%d")}


def _config_inited(app, config) -> None:
    config.html_static_path = [*config.html_static_path, str(STATIC)]
    options = dict(config.html_theme_options or {})
    stamp = build_stamp(Path(app.srcdir))
    line = (f'<p class="feasible-build-stamp">Built from commit <code>{html.escape(stamp["commit"])}</code>'
            f' on {stamp["date"]}.</p>')
    options["extra_footer"] = (options.get("extra_footer") or "") + line
    config.html_theme_options = options
    # the theme reads its default colour mode from the context (an empty one logs an error)
    config.html_context = {"default_mode": "auto", **(config.html_context or {}), "feasible_build": stamp}


def _one_script_each(app, pagename, templatename, context, doctree) -> None:
    files = context.get("script_files")
    if isinstance(files, list):
        seen, unique = set(), []
        for script in files:
            # an inline script is registered once with filename None and once with ""
            key = (str(getattr(script, "filename", script) or ""), repr(getattr(script, "attributes", "")))
            if key not in seen:
                seen.add(key)
                unique.append(script)
        files[:] = unique


STATIC = Path(__file__).resolve().parent / "static"


def setup(app):
    # the book's CSS, _ext/static/feasible.css, after the theme's. (Not a _static/ folder at the
    # root: jupyter-book would then link every .js file of every static path, MathJax's included,
    # into every page.)
    app.add_css_file("feasible.css", priority=900)
    app.connect("config-inited", _config_inited, priority=900)
    app.connect("html-page-context", _one_script_each, priority=900)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
