"""The add-on cost benchmark: one run, every add-on and noise model, ratios to the plain step.

Nothing here asserts a timing: only the structure of what the benchmark reports and that bad
options are refused before anything runs."""
import json

import pytest

from feasible import ADDONS
from feasible.__main__ import main
from feasible.bench import (
    bench,
    format_table,
    run,
    step_memory,
    target_of,
    variants,
    write_json,
)


def test_variants_measure_noise_only_where_an_addon_reads_it():
    vs = variants("small_cnn")
    assert vs[0] == ("none", "-")
    assert ("opt", "-") in vs and ("and", "-") in vs
    assert {n for a, n in vs if a == "prob"} == {"ema", "microbatch", "per_sample"}
    # BatchNorm in the train-mode loop couples the samples: no per-sample noise
    assert {n for a, n in variants("resnet18") if a == "focus"} == {"ema", "microbatch"}
    assert len(vs) == len(set(vs))


def test_bench_times_every_variant_against_none():
    rows = bench("mlp", batch_size=16, rounds=1, k=4, noises=("ema", "microbatch"))
    assert [(r["addon"], r["noise"]) for r in rows] == variants("mlp",
                                                                noises=("ema", "microbatch"))
    assert {r["addon"] for r in rows} == set(ADDONS)
    assert rows[0]["ratio"] == 1.0
    assert all(r["step_s"] > 0 and r["ratio_min"] <= r["ratio"] <= r["ratio_max"] for r in rows)
    salun = next(r for r in rows if r["addon"] == "salun")
    assert salun["setup_s"] > 0  # the saliency mask at theta0 is timed apart


def test_step_memory_runs_in_a_fresh_process():
    assert step_memory("mlp", ("prob", "microbatch"), batch_size=16, k=4) >= 0


def test_run_records_environment_steps_epoch_and_evaluation(tmp_path):
    result = run(["mlp"], [16], addons=("none", "prob"), noises=("ema",), rounds=1, k=4,
                 memory=False)
    env = result["environment"]
    assert {"torch", "threads", "cpu", "device"} <= set(env)
    assert [(r["addon"], r["noise"]) for r in result["steps"]] == [("none", "-"), ("prob", "ema")]
    assert result["epochs"][0]["ratio"] > 0 and result["evaluations"][0]["eval_s"] > 0
    assert result["evaluations"][0]["eval_plain_s"] > 0  # the other layout, alternated
    path = tmp_path / "bench" / "cpu.json"
    write_json(result, path)
    assert json.loads(path.read_text())["steps"][1]["addon"] == "prob"
    assert "prob" in format_table(result)
    assert "with contiguous weights" in format_table(result)


def test_evaluation_cost_alternates_both_layouts_on_a_convolutional_model():
    from feasible.bench import evaluation_cost

    e = evaluation_cost("small_cnn", sizes=(20, 60, 40), width=4, rounds=2)
    assert e["eval_s"] > 0 and e["eval_plain_s"] > 0
    assert e["layout_ratio"] == pytest.approx(e["eval_s"] / e["eval_plain_s"])
    with pytest.raises(ValueError, match="rounds"):
        evaluation_cost("small_cnn", rounds=0)


def test_targets_follow_the_issue():
    assert target_of("and", "-") == 1.05 and target_of("prob", "ema") == 1.05
    assert target_of("opt", "-") == 1.2 and target_of("focus_opt", "microbatch") == 1.2
    assert target_of("focus", "microbatch") == 1.3
    assert target_of("prob", "per_sample") is None and target_of("none", "-") is None


@pytest.mark.parametrize("kwargs, message", [
    (dict(model="resnet"), "Unknown model 'resnet'"),
    (dict(addons=("porb",)), "Unknown add-on 'porb'"),
    (dict(noises=("emma",)), "Unknown noise model 'emma'"),
    (dict(rounds=0), "The 'rounds' parameter of bench must be an int >= 1. Got 0 instead."),
    (dict(batch_size=1), "The 'batch_size' parameter of bench must be an int >= 2."),
    (dict(k=64), "The 'k' parameter of bench must be an int in [2, batch_size=16]"),
    (dict(device="tpu"), "Unknown device 'tpu'; expected one of 'cpu'"),
    (dict(device="cuda:7"), "Device 'cuda:7' is not available"),
    (dict(method="ngplux"), "Unknown method 'ngplux'"),
])
def test_bench_rejects_bad_values_before_running(kwargs, message):
    kwargs = {"batch_size": 16, **kwargs}
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        bench(**kwargs)


@pytest.mark.parametrize("kwargs, message", [
    (dict(models=["nope"]), "Unknown model 'nope'"),
    (dict(batch_sizes=[16, 1]), "The 'batch_size' parameter of bench must be an int >= 2."),
    (dict(widths={"resnet18": 0}), "The 'width of resnet18' parameter of bench"),
    (dict(threads=0), "The 'threads' parameter of bench must be an int >= 1"),
])
def test_run_rejects_bad_options_before_running(kwargs, message):
    kwargs = {"models": ["mlp"], "batch_sizes": [16], "k": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        run(**kwargs)


def test_bench_command_prints_ratios_and_writes_json(capsys, tmp_path):
    out_path = tmp_path / "b.json"
    assert main(["bench", "--model", "mlp", "--batch-size", "16", "--rounds", "1", "--k", "4",
                 "--addons", "none,and", "--no-memory", "--no-epoch", "--no-eval",
                 "--out", str(out_path)]) == 0
    out = capsys.readouterr().out
    assert "x none" in out and "and" in out and out_path.exists()
    assert main(["bench", "--model", "nope"]) == 2
    assert main(["bench", "--width", "resnet18"]) == 2
    assert main(["bench", "--batch-sizes", "12a"]) == 2
    assert "batch-sizes" in capsys.readouterr().err


def test_page_helpers_read_committed_measurements(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from feasible import bench as b

    result = run(["mlp"], [16], addons=("none", "and", "opt"), noises=("ema",), rounds=1, k=4,
                 memory=False, evaluation=False)
    write_json(result, tmp_path / "results" / "bench" / "cpu-test.json")
    with pytest.raises(FileNotFoundError, match="No benchmark result matches"):
        b.load("nothing/*.json", root=tmp_path)
    results = b.load("results/bench/*.json", root=tmp_path)
    steps = b.steps_table(results)
    assert list(steps.variant) == ["none", "and", "opt"] and set(steps.host) == {"cpu-test"}
    assert steps.target.tolist()[1:] == [1.05, 1.2]
    judged = steps.dropna(subset=["target"])
    assert judged.met.tolist() == (judged.ratio <= judged.target).tolist()
    verdict = b.verdicts(steps, b.epochs_table(results))
    assert len(verdict) == 3 and verdict["over by"].ge(0).all()  # two groups and the epoch
    assert set(b.selections_table(results)) >= {"kthvalue", "sort", "topk"}
    assert len(b.plot_ratios(steps, "cpu-test")) == 1
