"""The add-on cost benchmark: one run, every add-on, ratios to the plain step."""
import pytest

from feasible import ADDONS
from feasible.__main__ import main
from feasible.bench import bench


def test_bench_times_every_addon_against_none():
    rows = bench("mlp", batch_size=16, steps=2, k=4)
    assert [r["addon"] for r in rows] == list(ADDONS)
    assert rows[0]["ratio"] == 1.0
    assert all(r["step_s"] > 0 and r["ratio"] > 0 for r in rows)
    salun = next(r for r in rows if r["addon"] == "salun")
    assert salun["setup_s"] > 0  # the saliency mask at theta0 is timed apart


@pytest.mark.parametrize("kwargs, message", [
    (dict(model="resnet"), "Unknown model 'resnet'"),
    (dict(addons=("porb",)), "Unknown add-on 'porb'"),
    (dict(steps=0), "The 'steps' parameter of bench must be an int >= 1. Got 0 instead."),
    (dict(batch_size=1), "The 'batch_size' parameter of bench must be an int >= 2."),
    (dict(device="tpu"), "Unknown device 'tpu'; expected one of 'cpu'"),
])
def test_bench_rejects_bad_values_before_running(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        bench(**kwargs)


def test_bench_command_prints_ratios(capsys):
    assert main(["bench", "--model", "mlp", "--batch-size", "16", "--steps", "2", "--k", "4"]) == 0
    out = capsys.readouterr().out
    assert "x none" in out and "prob" in out
    assert main(["bench", "--model", "nope"]) == 2
