"""Tests of the command line and of sweeps: grids, resuming, failures, clear errors."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import feasible.experiment
from feasible.__main__ import main
from feasible.experiment import Config, config_hash, record_path
from feasible.paths import ROOT
from feasible.sweep import expand, failure_path, load_grid, sweep

SMOKE_RUN = ["run", "--scale", "smoke", "--dataset", "digits", "--model", "mlp", "--scenario",
             "random", "--forget-fraction", "0.1", "--epochs", "1"]


pytestmark = pytest.mark.usefixtures("isolated_dirs")


@pytest.fixture
def no_compute(monkeypatch):
    """Make any computation fail loudly: errors must come before it."""
    def boom(*args, **kwargs):
        raise AssertionError("computed despite a bad argument")

    monkeypatch.setattr(feasible.experiment, "run", boom)
    monkeypatch.setattr("feasible.data.load", boom)


def _records(tmp_path: Path, scale: str = "smoke") -> list[Path]:
    return sorted((tmp_path / "results" / scale).glob("*.json"))


def test_list_names_everything(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("digits", "fashion_mnist", "small_cnn", "resnet18", "ngplus", "l1_sparse",
                 "prob", "focus", "salun", "smoke", "paper"):
        assert name in out


def test_run_prints_the_table_and_the_record_path(capsys, tmp_path):
    assert main(SMOKE_RUN + ["--method", "ngplus", "--addon", "and"]) == 0
    out = capsys.readouterr().out
    (path,) = _records(tmp_path)
    assert str(path) in out
    for word in ("original", "retrained", "unlearned", "UA", "avg_gap"):
        assert word in out
    record = json.loads(path.read_text())
    assert record["config"]["addon"] == "and" and len(record["epochs"]) == 1


def test_run_train_options_override_the_preset(tmp_path):
    assert main(SMOKE_RUN + ["--method", "ft", "--train-epochs", "20", "--no-train-augment"]) == 0
    (path,) = _records(tmp_path)
    record = json.loads(path.read_text())
    assert record["train_config"]["epochs"] == 20 and record["config"]["train"]["epochs"] == 20
    assert record["train_config"]["lr"] == 0.1  # the rest from the smoke preset


@pytest.mark.parametrize("args, words", [
    (["--method", "ngplsu"], "Unknown method 'ngplsu'; expected one of"),
    (["--method", "ft", "--addon", "porb"], "Unknown add-on 'porb'"),
    (["--method", "ft", "--p", "1.5"], "The 'p' field of Config must be a float"),
    (["--method", "ft", "--forget-class", "3"], "'forget_class' field of Config must be None"),
    (["--method", "ft", "--dataset", "mnist"], "Unknown dataset 'mnist'"),
    (["--method", "ft", "--train-lr", "-1"], "'lr' parameter of TrainConfig must be a float > 0"),
    ([], "The '--method' option is required"),
])
def test_run_rejects_bad_values_before_computing(args, words, capsys, no_compute):
    assert main(SMOKE_RUN + args) == 2
    assert words in capsys.readouterr().err


def test_run_rejects_badly_typed_options(capsys, no_compute):
    with pytest.raises(SystemExit) as exit_info:
        main(SMOKE_RUN + ["--method", "ft", "--lr", "fast"])
    assert exit_info.value.code == 2
    assert "--lr: invalid float value: 'fast'" in capsys.readouterr().err


def test_repository_grids_expand():
    parts = ("cpu-authors-lr", "cpu-authors", "cpu-authors-tuned", "cpu-literature", "cpu-fair",
             "cpu-fair-chosen", "cpu-ablations", "cpu-cifar", "cpu-cifar-lr",
             "cpu-cifar-tuned", "cpu-cifar-step")
    sizes = {name: len(expand(load_grid(ROOT / "grids" / f"{name}.json")))
             for name in ("smoke", "cpu", "paper", "cpu-related", "cpu-related-lr") + parts}
    assert sizes == {"smoke": 30, "cpu": 432, "paper": 360, "cpu-related": 102,
                     "cpu-related-lr": 15, "cpu-authors-lr": 6,
                     "cpu-authors": 84, "cpu-authors-tuned": 84, "cpu-literature": 50,
                     "cpu-fair": 61, "cpu-fair-chosen": 30, "cpu-ablations": 24,
                     "cpu-cifar": 51, "cpu-cifar-lr": 6, "cpu-cifar-tuned": 42,
                     "cpu-cifar-step": 4}
    whole = [config_hash(c) for c in expand(load_grid(ROOT / "grids" / "cpu.json"))]
    # the parts in order, each configuration once (the pilots' chosen rates recur in the parts
    # that use them)
    assert whole == list(dict.fromkeys(config_hash(c) for name in parts
                                       for c in expand(load_grid(ROOT / "grids" / f"{name}.json"))))
    smoke = expand(load_grid(ROOT / "grids" / "smoke.json"))
    assert {(c.method, c.addon) for c in smoke} == {
        (m, a) for m in ("ft", "ga", "ngplus", "rl", "srl", "l1_sparse")
        for a in ("none", "salun", "and", "prob", "focus")}


def test_sub_grids_and_includes(tmp_path):
    """'grids' unions sub-grids over the shared 'fixed'; 'include' unions grid files."""
    one = {"fixed": {"scale": "smoke", "epochs": 1}, "grids": [
        {"methods": ["ft", "ga"], "seeds": [0]},
        {"methods": ["ft"], "seeds": [0, 1], "fixed": {"epochs": 2}}]}
    configs = expand(one)
    assert [(c.method, c.seed, c.epochs) for c in configs] == [
        ("ft", 0, 1), ("ga", 0, 1), ("ft", 0, 2), ("ft", 1, 2)]
    (tmp_path / "one.json").write_text(json.dumps(one))
    (tmp_path / "two.json").write_text(json.dumps({"fixed": {"scale": "smoke", "epochs": 1},
                                                   "methods": ["ft", "rl"]}))
    (tmp_path / "all.json").write_text(json.dumps({"description": "both",
                                                   "include": ["one.json", "two.json"]}))
    both = expand(load_grid(tmp_path / "all.json"))
    assert [(c.method, c.seed, c.epochs) for c in both] == [
        ("ft", 0, 1), ("ga", 0, 1), ("ft", 0, 2), ("ft", 1, 2), ("rl", 0, 1)]  # one ft+0+1
    (tmp_path / "loop.json").write_text(json.dumps({"include": ["loop.json"]}))
    with pytest.raises(ValueError, match="includes itself"):
        load_grid(tmp_path / "loop.json")
    (tmp_path / "missing.json").write_text(json.dumps({"include": ["nowhere.json"]}))
    with pytest.raises(ValueError, match="nowhere.json does not exist"):
        load_grid(tmp_path / "missing.json")
    for bad, words in [({"grids": []}, "'grids' must be a non-empty list"),
                       ({"grids": [{"methods": ["ft"]}], "methods": ["ft"]}, "beside the axes"),
                       ({"grids": [{"grids": [{"methods": ["ft"]}]}]}, "do not nest"),
                       ({"grids": [{"methods": "ft"}]}, "sub-grid 1: the grid key 'methods'")]:
        with pytest.raises(ValueError, match=re.escape(words)):
            expand(bad)
    (tmp_path / "bad.json").write_text(json.dumps({"include": "one.json"}))
    with pytest.raises(ValueError, match="'include' must be a non-empty list"):
        load_grid(tmp_path / "bad.json")


def test_expand_products_entries_and_errors():
    grid = {"fixed": {"scale": "smoke", "epochs": 1},
            "methods": ["ft", {"method": "ngplus", "lr": 0.2}], "addons": ["none", "and"],
            "seeds": [0, 1]}
    configs = expand(grid)
    assert len(configs) == 8
    assert {c.lr for c in configs if c.method == "ngplus"} == {0.2}
    assert expand({**grid, "seeds": [0, 0]}) == expand({**grid, "seeds": [0]})  # deduplicated
    with pytest.raises(ValueError, match="Unknown grid key 'metods'"):
        expand({"metods": ["ft"]})
    with pytest.raises(ValueError, match="must be a non-empty list"):
        expand({"methods": "ft"})
    with pytest.raises(ValueError, match="Unknown Config field 'learning_rate'"):
        expand({"fixed": {"learning_rate": 1}, "methods": ["ft"]})
    with pytest.raises(ValueError, match="Unknown add-on 'porb'"):
        expand({"fixed": {"scale": "smoke"}, "methods": ["ft"], "addons": ["porb"]})


def _write_grid(tmp_path: Path) -> Path:
    grid = {"fixed": {"scale": "smoke", "epochs": 1},
            "methods": ["ft", "ga", "srl"], "addons": ["none"], "seeds": [0]}
    path = tmp_path / "three.json"
    path.write_text(json.dumps(grid))
    return path


def test_sweep_resumes_without_redoing_or_duplicating(tmp_path, capsys):
    grid = _write_grid(tmp_path)
    assert main(["sweep", str(grid), "--limit", "1", "--no-progress"]) == 0
    first = _records(tmp_path)
    assert len(first) == 1
    stamp = first[0].stat().st_mtime_ns
    assert "1 computed, 0 already recorded, 0 failed, 2 left" in capsys.readouterr().out
    assert main(["sweep", str(grid), "--no-progress"]) == 0
    assert "2 computed, 1 already recorded" in capsys.readouterr().out
    records = _records(tmp_path)
    assert len(records) == 3 and first[0] in records
    assert first[0].stat().st_mtime_ns == stamp  # not recomputed
    hashes = {json.loads(p.read_text())["hash"] for p in records}
    assert hashes == {p.stem for p in records} and len(hashes) == 3
    assert main(["sweep", str(grid), "--dry-run", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.count("recorded ") == 3 and "0 computed, 3 already recorded" in out
    assert not list((tmp_path / "results" / "smoke").glob(".*.tmp"))


def test_sweep_records_a_failure_and_goes_on(tmp_path):
    configs = expand(load_grid(_write_grid(tmp_path)))

    def flaky(config, **kwargs):
        if config.method == "ga":
            raise RuntimeError("out of memory")
        return feasible.experiment.compute_once(config, **kwargs)

    summary = sweep(configs, runner=flaky, progress=False)
    assert len(summary.done) == 2 and len(summary.failed) == 1
    assert "RuntimeError: out of memory" in summary.failed[0][1]
    assert any("FAILED" in line for line in summary.lines())
    bad = next(c for c in configs if c.method == "ga")
    assert "out of memory" in json.loads(failure_path(bad).read_text())["traceback"]
    assert not record_path(bad).exists()
    summary = sweep(configs, progress=False)  # a restart retries only the failed one
    assert len(summary.done) == 1 and len(summary.skipped) == 2
    assert record_path(bad).exists() and not failure_path(bad).exists()


def test_sweep_cli_errors(tmp_path, capsys, no_compute):
    grid = _write_grid(tmp_path)
    assert main(["sweep", str(grid), "--limit", "-1"]) == 2
    assert "'--limit' option must be an int >= 0" in capsys.readouterr().err
    assert main(["sweep", str(grid), "--shard", "3/2"]) == 2
    assert "'--shard' option must be I/N" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"methods": ["ft"], "addons": ["porb"]}))
    assert main(["sweep", str(bad)]) == 2
    assert "Unknown add-on 'porb'" in capsys.readouterr().err


def test_sweep_shards_partition_the_grid(tmp_path, capsys):
    grid = _write_grid(tmp_path)
    seen = []
    for shard in ("0/2", "1/2"):
        assert main(["sweep", str(grid), "--shard", shard, "--dry-run", "--no-progress"]) == 0
        seen += [line.split()[-1] for line in capsys.readouterr().out.splitlines()
                 if line.startswith("to run")]
    labels = {f"digits/mlp/random0.1/{m}+none/seed0" for m in ("ft", "ga", "srl")}
    assert sorted(seen) == sorted(labels)


def test_config_of_cli_equals_config_of_grid():
    grid = {"fixed": {"scale": "smoke", "epochs": 1}, "methods": ["ngplus"], "addons": ["and"]}
    (from_grid,) = expand(grid)
    assert from_grid == Config(method="ngplus", addon="and", scale="smoke", epochs=1)


def test_smoke_grid_runs_every_method_with_every_addon(tmp_path, capsys):
    """The smoke test of issue 3: every base method x every add-on on digits, end to end."""
    grid = ROOT / "grids" / "smoke.json"
    assert main(["sweep", str(grid), "--no-progress"]) == 0
    assert "30 computed, 0 already recorded, 0 failed" in capsys.readouterr().out
    records = [json.loads(p.read_text()) for p in _records(tmp_path)]
    assert len(records) == 30
    for record in records:
        final, name = record["final"], f"{record['config']['method']}+{record['config']['addon']}"
        assert record["diverged_epoch"] is None, name
        assert all(0 <= final[m] <= 100 for m in ("UA", "RA", "TA", "MIA")), name
        kept = [e["kept_fraction"] for e in record["epochs"]]
        addon = record["config"]["addon"]
        if addon == "none":
            assert kept == [1.0, 1.0], name
        elif addon == "focus":  # the focus factor is rarely exactly 0: it scales, keeps all
            assert all(0 < k <= 1 for k in kept), name
        else:
            assert all(0 < k < 1 for k in kept), name
