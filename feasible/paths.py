"""Where the project keeps its caches and result records, and the check that it can write there."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

#: The repository (or installation) root: the folder holding the ``feasible`` package.
ROOT = Path(__file__).resolve().parent.parent


class NotWritableError(OSError):
    """A folder the project must write to cannot be created or written."""


def cache_dir() -> Path:
    """Git-ignored cache for decoded datasets and checkpoints (``FEASIBLE_CACHE`` overrides)."""
    path = Path(os.environ.get("FEASIBLE_CACHE", ROOT / ".cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def results_dir() -> Path:
    """Committed result records, by scale (``FEASIBLE_RESULTS`` overrides)."""
    return Path(os.environ.get("FEASIBLE_RESULTS", ROOT / "results"))


def shared_datasets_dir() -> Path:
    """The offline dataset copies beside the project (``FEASIBLE_SHARED_DATASETS`` overrides)."""
    return Path(os.environ.get("FEASIBLE_SHARED_DATASETS", ROOT.parent / "shared" / "datasets"))


def check_writable(folder: Path, variable: str = "FEASIBLE_RESULTS") -> Path:
    """Create ``folder`` if needed and prove it writable by writing and removing a probe file.

    Args:
        folder: the folder.
        variable: the environment variable that chooses it, named in the error.

    Returns:
        ``folder``.

    Raises:
        NotWritableError: the folder cannot be created or written (the message names it, the
            reason and the variable that moves it).
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        reason = err.strerror or str(err)
        where = f" ({err.filename})" if err.filename and str(err.filename) != str(folder) else ""
        value = os.environ.get(variable)
        now = f"it is {value!r}" if value is not None else "it is unset, so the default applies"
        raise NotWritableError(f"The folder {folder} is not writable: {reason}{where}. Set "
                               f"{variable} to a writable folder ({now}).") from err
    return folder
