"""Fixtures shared by the unit tests."""
import os
import shutil
from pathlib import Path

import pytest

import feasible.data
import feasible.experiment

#: Variables that would make a test depend on the shell it was started from.
_SHELL_SETTINGS = ("FEASIBLE_CLAIM_STALE_S", "FEASIBLE_PROGRESS")


@pytest.fixture
def isolated_dirs(tmp_path, monkeypatch):
    """This test's own cache and results folders, and none of the shell's sweep settings.

    Opt in per module: ``pytestmark = pytest.mark.usefixtures("isolated_dirs")``.
    """
    monkeypatch.setenv("FEASIBLE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FEASIBLE_RESULTS", str(tmp_path / "results"))
    for name in _SHELL_SETTINGS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def warm_cache(tmp_path_factory) -> Path:
    """A cache holding the smoke scale's data and its original and retrained models (seed 0),
    computed once per session."""
    folder = tmp_path_factory.mktemp("warm")
    saved = {k: os.environ.get(k) for k in ("FEASIBLE_CACHE", "FEASIBLE_RESULTS")}
    os.environ.update(FEASIBLE_CACHE=str(folder / "cache"), FEASIBLE_RESULTS=str(folder / "r"))
    try:
        feasible.experiment.run(feasible.experiment.Config(method="ft", scale="smoke", epochs=1))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return folder / "cache"


@pytest.fixture
def warm(warm_cache, tmp_path) -> None:
    """This test's cache starts with the trained models: its processes only unlearn."""
    shutil.copytree(warm_cache, tmp_path / "cache", dirs_exist_ok=True)


@pytest.fixture
def no_compute(monkeypatch):
    """Make any computation fail loudly: errors must come before it."""
    def boom(*args, **kwargs):
        raise AssertionError("computed despite a bad argument")

    monkeypatch.setattr(feasible.experiment, "_compute", boom)
    monkeypatch.setattr(feasible.data, "load", boom)
