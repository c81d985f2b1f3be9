"""Execute the stale notebook templates into book/, then render the book (warnings are errors).

A template in notebooks/ is executed with papermill into book/<same name> when the executed
copy is missing or was made from other sources: each executed copy records, in its metadata,
the hash of its template (cell sources, tags and MyST-NB figure metadata: a new caption or alt
text re-executes the page), of the library modules it imports (directly or through each other)
and of the data files it declares it reads: glob patterns from the repository root in the
template's metadata, ``"feasible": {"inputs": ["results/cpu/*.json", "grids/cpu-*.json"]}``,
so that a new result record re-executes the pages that read records and nothing else. A second
`make book` with nothing changed executes nothing.
Usage: ``python tools/build_book.py [NAME ...] [--no-render | --render-only]`` (names: template
stems). ``--render-only`` renders the executed copies in book/ as they are, stale or not: a change
to the book's configuration, CSS or Markdown pages needs no re-execution.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import papermill

ROOT = Path(__file__).resolve().parent.parent


_IMPORT = re.compile(
    r"^[ \t]*(?:from[ \t]+(feasible(?:\.\w+)*)[ \t]+import[ \t]+(\([\w\s,]+\)|[\w \t,]+)"
    r"|import[ \t]+(feasible(?:\.\w+)*))",
    re.M,
)


def _module_file(dotted: str) -> Path | None:
    path = ROOT.joinpath(*dotted.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def library_files(code: str) -> set[Path]:
    """The ``feasible`` source files that ``code`` imports, directly or through each other."""
    found: set[Path] = set()
    todo = [code]
    while todo:
        for package, names, module in _IMPORT.findall(todo.pop()):
            dotted = [module or package]
            dotted += [f"{package}.{name.strip()}" for name in names.strip("()").split(",")
                       if package and name.strip()]
            dotted += [".".join(dotted[0].split(".")[:i]) for i in range(1, dotted[0].count(".") + 1)]
            for name in dotted:
                path = _module_file(name)
                if path is not None and path not in found:
                    found.add(path)
                    todo.append(path.read_text())
    return found


def input_files(nb: nbformat.NotebookNode) -> list[Path]:
    """The data files a template declares it reads (``metadata.feasible.inputs``, glob patterns
    from the repository root), sorted; hidden files (a record being written) left out."""
    patterns = nb.metadata.get("feasible", {}).get("inputs", [])
    found = {path for pattern in patterns for path in ROOT.glob(pattern)
             if path.is_file() and not path.name.startswith(".")}
    return sorted(found)


def source_hash(template: Path) -> str:
    """Hash of what determines an executed notebook: its template, the library code it imports
    and the content of the data files it declares (:func:`input_files`)."""
    nb = nbformat.read(template, as_version=4)
    h = hashlib.sha256()
    code = ""
    for cell in nb.cells:  # sources and what the page shows of them (tags, figure captions and
        # alt texts); stray outputs, ids or other metadata in a template change nothing
        shown = {k: cell.metadata[k] for k in ("tags", "mystnb") if k in cell.metadata}
        h.update(cell.cell_type.encode() + b"\0" + cell.source.encode() + b"\0"
                 + (json.dumps(shown, sort_keys=True).encode() + b"\0" if shown else b""))
        if cell.cell_type == "code":
            code += cell.source + "\n"
    for path in sorted(library_files(code)):
        h.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    inputs = input_files(nb)
    if inputs:  # templates without inputs keep the hash they had
        h.update(b"inputs\0")
    for path in inputs:
        h.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def recorded_hash(executed: Path) -> str | None:
    if not executed.exists():
        return None
    return nbformat.read(executed, as_version=4).metadata.get("feasible", {}).get("source_hash")


def execute(template: Path, executed: Path, key: str) -> None:
    t0 = time.time()
    print(f"executing {template.relative_to(ROOT)} -> {executed.relative_to(ROOT)}", flush=True)
    papermill.execute_notebook(
        str(template), str(executed), cwd=str(ROOT), progress_bar=False, kernel_name="python3"
    )
    nb = nbformat.read(executed, as_version=4)
    nb.metadata["feasible"] = {**nb.metadata.get("feasible", {}), "source_hash": key}
    for field in ("duration", "start_time", "end_time"):  # keep re-executions diffable
        nb.metadata.get("papermill", {}).pop(field, None)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        for field in ("duration", "start_time", "end_time", "status", "exception"):
            cell.metadata.get("papermill", {}).pop(field, None)
    nbformat.write(nb, executed)
    print(f"  done in {time.time() - t0:.0f} s", flush=True)


def vendor_mathjax() -> None:
    """Copy MathJax (from the pinned jupyter-server-mathjax) so math renders offline."""
    import jupyter_server_mathjax

    src = Path(jupyter_server_mathjax.__file__).parent / "static"
    dst = ROOT / "_build" / "static" / "mathjax"
    if not (dst / "MathJax.js").exists():
        shutil.copytree(src, dst, dirs_exist_ok=True)


def main(names: list[str]) -> int:
    os.environ.pop("MPLBACKEND", None)  # a kernel with MPLBACKEND=agg would draw no inline figures
    render = "--no-render" not in names
    execute_stale = "--render-only" not in names
    names = [n for n in names if not n.startswith("--")]
    templates = sorted((ROOT / "notebooks").glob("*.ipynb")) if execute_stale else []
    if names:
        templates = [t for t in templates if t.stem in names]
    for template in templates:
        executed = ROOT / "book" / template.name
        key = source_hash(template)
        if recorded_hash(executed) == key:
            print(f"up to date: {executed.relative_to(ROOT)}")
            continue
        execute(template, executed, key)
    if not render:
        return 0
    vendor_mathjax()
    cmd = [sys.executable, "-m", "jupyter_book", "build", str(ROOT), "-W", "-n", "--keep-going", "--all"]
    jb = shutil.which("jupyter-book", path=str(Path(sys.executable).parent))
    if jb:
        cmd = [jb, "build", str(ROOT), "-W", "-n", "--keep-going", "--all"]
    rc = subprocess.call(cmd, cwd=ROOT)
    if rc == 0:
        print(f"book: file://{ROOT / '_build' / 'html' / 'index.html'}")
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
