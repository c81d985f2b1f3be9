"""The tolerant comparison of the book's summary cells (feasible.checks and the nbval hook)."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from feasible.checks import approx, outputs_agree

ROOT = Path(__file__).resolve().parent.parent


def test_approx_prints_the_tolerance_with_its_decimals():
    assert approx(0.5234, 0.05) == "0.52 ± 0.05"
    assert approx(3.8149, 0.3) == "3.8 ± 0.3"
    assert approx(12.0, 2) == "12.0 ± 2.0"
    assert approx(-0.001234, 0.0005) == "-0.0012 ± 0.0005"
    assert approx(0.61, 0.15) == "0.61 ± 0.15"
    assert approx(1.0, 0.05, digits=3) == "1.000 ± 0.050"


@pytest.mark.parametrize("tol", [0, -1, float("nan"), float("inf"), "0.1", None])
def test_approx_refuses_a_tolerance_that_is_not_positive(tol):
    with pytest.raises(ValueError, match="'tol' parameter of approx"):
        approx(1.0, tol)


def test_values_within_tolerance_agree():
    assert outputs_agree("CE 3.81 ± 0.30, kept 0.29 ± 0.05", "CE 3.78 ± 0.30, kept 0.31 ± 0.05") is None
    # the printouts are rounded: half a unit in the last place of each is allowed too
    assert outputs_agree("x: 0.50 ± 0.05", "x: 0.55 ± 0.05") is None
    assert outputs_agree("x: 0.5 ± 0.1", "x: 0.6 ± 0.1") is None
    assert outputs_agree("x: 1e-3 ± 2e-3", "x: -1e-3 ± 2e-3") is None


def test_values_outside_tolerance_fail_with_the_numbers():
    problem = outputs_agree("x: 0.50 ± 0.05", "x: 0.57 ± 0.05")
    assert problem is not None and "0.57" in problem and "0.50" in problem


def test_everything_else_must_match_exactly():
    assert outputs_agree("holds: True, 0.5 ± 0.1", "holds: False, 0.5 ± 0.1") is not None
    assert outputs_agree("count 3, 0.5 ± 0.1", "count 4, 0.5 ± 0.1") is not None
    assert outputs_agree("x: 0.5 ± 0.1", "x: 0.5 ± 0.2") is not None  # the tolerance itself
    assert outputs_agree("x: 0.5 ± 0.1", "x: 0.5") is not None
    assert outputs_agree("x: 0.5 ± 0.1\ny: 1", "x: 0.5 ± 0.1") is not None


def _notebook(printed_now: str, committed: str) -> dict:
    cell = {"cell_type": "code", "execution_count": 1, "id": "c1",
            "metadata": {"tags": ["nbval-check-output"]},
            "source": f"print({printed_now!r})",
            "outputs": [{"output_type": "stream", "name": "stdout", "text": committed + "\n"}]}
    return {"cells": [cell], "metadata": {"kernelspec": {"name": "python3", "language": "python",
                                                         "display_name": "Python 3"}},
            "nbformat": 4, "nbformat_minor": 5}


@pytest.mark.parametrize("printed_now, committed, passes", [
    ("kept 0.31 ± 0.05", "kept 0.29 ± 0.05", True),
    ("kept 0.40 ± 0.05", "kept 0.29 ± 0.05", False),
    ("holds: False", "holds: True", False),
])
def test_nbval_uses_the_tolerant_comparison(tmp_path, printed_now, committed, passes):
    """The project's conftest.py makes nbval accept a re-execution within tolerance, and only then."""
    shutil.copy(ROOT / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "page.ipynb").write_text(json.dumps(_notebook(printed_now, committed)))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-p",
         "no:cacheprovider", "-q", "page.ipynb"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert (result.returncode == 0) == passes, result.stdout[-2000:]
