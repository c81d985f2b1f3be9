"""Where the project keeps its caches and result records."""
from __future__ import annotations

import os
from pathlib import Path

#: The repository (or installation) root: the folder holding the ``feasible`` package.
ROOT = Path(__file__).resolve().parent.parent


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
