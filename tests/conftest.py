"""Fixtures shared by the unit tests."""
import pytest

import feasible.data
import feasible.experiment


@pytest.fixture
def no_compute(monkeypatch):
    """Make any computation fail loudly: errors must come before it."""
    def boom(*args, **kwargs):
        raise AssertionError("computed despite a bad argument")

    monkeypatch.setattr(feasible.experiment, "_compute", boom)
    monkeypatch.setattr(feasible.data, "load", boom)
