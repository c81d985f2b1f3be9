"""feasible.report on hand-made records: tables, a missing record, a diverged run, one seed,
the verdict rule; and the data inputs of tools/build_book.py's staleness hash."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from feasible import report
from feasible.experiment import Config, config_hash, write_record

ROOT = Path(__file__).resolve().parent.parent


def make_record(method="srl_authors", addon="none", seed=0, *, scenario="random",
                member=50.0, subsets=(49.0, 51.0, 50.0, 52.0, 48.0), rua=5.0, ua=10.0,
                reached=None, diverged=None, unlearn_s=10.0, epochs=3, protocol="authors",
                lr=None, entropy=True):
    """A record shaped like feasible.experiment.run's, with the numbers given."""
    config = {"scale": "cpu", "dataset": "fashion_mnist", "model": "small_cnn",
              "protocol": protocol, "method": method, "addon": addon, "seed": seed,
              "scenario": scenario, "lr": lr, "epochs": epochs, "p": 0.3, "renorm": False,
              "forget_fraction": 0.1 if scenario == "random" else None,
              "forget_class": 0 if scenario == "class" else None}
    feature = "entropy" if entropy else "confidence"
    final = {"UA": ua, "RA": 99.0, "TA": 90.0, "MIA": 100.0 - member, "avg_gap": 2.0,
             "rUA": rua, "FID": 90.0, "epochs_to_reach_retrain_ua": reached,
             "unlearn_wall_time": unlearn_s,
             "MIA_subsets": {feature: list(subsets)}}
    if entropy:
        final["MIA_member_entropy"] = member
    original = {"UA": 0.0, "RA": 100.0, "TA": 90.0, "MIA": 10.0, "rUA": 10.0,
                "MIA_subsets": {feature: [90.0] * 5}}
    if entropy:
        original["MIA_member_entropy"] = 90.0
    retrained = {"UA": 10.0, "RA": 100.0, "TA": 90.0, "MIA": 20.0, "rUA": 0.0,
                 "MIA_subsets": {feature: [80.0] * 5}}
    if entropy:
        retrained["MIA_member_entropy"] = 80.0
    per_epoch = [{"epoch": e, "UA": ua * e / epochs, "RA": 99.0, "TA": 90.0,
                  "MIA": 100.0 - member, "rUA": rua, "wall_time": unlearn_s / epochs,
                  "kept_fraction": 0.5, **({"MIA_member_entropy": member} if entropy else {})}
                 for e in range(1, (diverged or epochs) + 1)]
    return {"config": config, "final": final, "epochs": per_epoch, "diverged_epoch": diverged,
            "original": {"metrics": original, "train": {"train_accuracy": 100.0}},
            "retrained": {"metrics": retrained, "train": {"train_accuracy": 100.0}},
            "method": {"default_lr": 0.03}, "timings": {"total_s": 2 * unlearn_s},
            "environment": {"torch": "2", "python": "3.11", "device": "cpu",
                            "device_name": "x86_64", "threads": 1, "git_commit": "abc",
                            "git_dirty": False},
            "data": {"dataset": "fashion_mnist", "source": "Fashion-MNIST, IDX files",
                     "train_size": 18000, "test_size": 10000}}


# --- the verdict rule ------------------------------------------------------------------------

@pytest.mark.parametrize("improvements, spread, expected", [
    ([1.0, 1.1, 0.9], 0.0, "holds"),            # mean 1 > 2 SE ~ 0.12
    ([-1.0, -1.1, -0.9], 0.0, "does not hold"),  # the reverse
    ([1.0, -1.0, 0.5], 0.0, "mixed"),           # within noise
    ([1.0, 1.1, 0.9], 2.0, "mixed"),            # beyond 2 SE but not beyond the MIA spread
    ([0.0, 0.0, 0.0], 0.0, "does not hold"),    # no difference at all
    ([5.0], 0.0, "mixed"),                      # one seed: no standard error
    ([], 0.0, "mixed"),
    ([1.0, math.nan, 1.2, 0.8], 0.0, "holds"),  # NaN left out
])
def test_verdict_rule(improvements, spread, expected):
    outcome, mean, se, n = report.verdict(improvements, spread)
    assert outcome == expected
    assert n == sum(1 for x in improvements if not math.isnan(x))
    if n == 1:
        assert math.isnan(se) and mean == improvements[0]


def test_verdict_threshold_is_two_standard_errors():
    d = [1.0, 3.0]  # mean 2, sd sqrt(2), SE 1: exactly 2 SE is not "more than"
    assert report.verdict(d)[0] == "mixed"
    assert report.verdict([1.1, 3.1])[0] == "holds"


# --- tables ------------------------------------------------------------------------------------

def test_run_row_reads_the_authors_member_rate_and_its_spread():
    row = report.run_row(make_record(member=40.0, subsets=(38.0, 42.0, 40.0, 40.0, 40.0)))
    assert row["mia_feature"] == "entropy" and row["mia_member"] == 40.0
    assert row["mia_subset_range"] == 4.0
    assert row["mia_subset_sd"] == pytest.approx(pd.Series([40, 38, 42, 40, 40, 40.0]).std())
    assert row["abs_rUA"] == 5.0 and row["lr"] == 1e-4  # lr None: the protocol's
    assert row["ua_travel"] == pytest.approx(100.0)
    assert row["scenario"] == "random 10%" and row["base_method"] == "srl"
    plain = report.run_row(make_record(entropy=False, member=30.0))
    assert plain["mia_feature"] == "confidence" and plain["mia_member"] == pytest.approx(30.0)


def test_diverged_run_is_flagged_counted_and_left_out_of_means():
    records = [make_record(seed=0, rua=2.0), make_record(seed=1, rua=4.0),
               make_record(seed=2, rua=math.nan, diverged=2)]
    records[2]["final"]["rUA"] = None  # stored NaN
    runs = report.runs_table(records)
    assert runs.diverged.tolist() == [False, False, True]
    assert runs.diverged_epoch.iloc[2] == 2
    summary = report.summarize(runs)
    assert len(summary) == 1
    row = summary.iloc[0]
    assert (row.seeds, row.diverged) == (3, 1)
    assert row.rUA_mean == 3.0 and row.rUA_sd == pytest.approx(math.sqrt(2))
    assert len(report.diverged_table(runs)) == 1
    curves = report.epoch_curves(records)
    assert curves[curves.seed == 2].epoch.max() == 2  # the diverged run stops at its epoch


def test_one_seed_gives_a_mean_without_sd():
    summary = report.summarize(report.runs_table([make_record(rua=7.0)]))
    assert summary.iloc[0].rUA_mean == 7.0 and math.isnan(summary.iloc[0].rUA_sd)
    cells = report.format_mean_sd(summary, ["rUA", "MIA"])
    assert cells.iloc[0].rUA == "7.0"


def test_empty_tables_keep_their_columns():
    runs = report.runs_table([])
    assert runs.empty and "mia_member" in runs
    assert report.summarize(runs).empty
    assert report.claim_comparisons(runs).empty
    assert report.claim_verdicts(report.claim_comparisons(runs)).empty
    verdicts = report.claim_verdicts(report.claim_comparisons(runs))
    assert "No claim" in report.verdict_markdown(verdicts) and report.verdict_table(verdicts).empty
    assert report.epoch_curves([]).empty and report.references_table([]).empty
    assert report.mia_spread_table(runs).empty and report.diverged_table(runs).empty
    assert report.timing_table([]).empty and report.environment_table([]).empty


def test_epoch_curves_start_at_the_original_model():
    curves = report.epoch_curves([make_record()])
    start = curves[curves.epoch == 0].iloc[0]
    assert start.UA == 0.0 and start.mia_member == 90.0 and math.isnan(start.epoch_s)
    assert curves.epoch.tolist() == [0, 1, 2, 3]


def test_references_table_deduplicates_shared_references():
    refs = report.references_table([make_record(addon="none"), make_record(addon="and")])
    assert sorted(refs.reference) == ["original", "retrained"]
    table = report.results_table(report.runs_table([make_record()]), refs)
    assert table.index[0] == "retrained model" and table.index[2] == "SRL + none"
    assert all(set(view) <= set(table.columns) for view in report.RESULT_VIEWS.values())


# --- claims ------------------------------------------------------------------------------------

def _grid(addon_member, none_member=50.0, seeds=(0, 1, 2), **kw):
    records = []
    for seed in seeds:
        records.append(make_record(addon="none", seed=seed, member=none_member + seed * 0.1,
                                   subsets=(none_member,) * 5, **kw))
        records.append(make_record(addon="focus", seed=seed, member=addon_member + seed * 0.1,
                                   subsets=(addon_member,) * 5, **kw))
    return report.runs_table(records)


def test_lower_mia_holds_beyond_noise_and_spread():
    comparisons = report.claim_comparisons(_grid(addon_member=40.0))
    mia = comparisons[comparisons.claim == "lower_mia"].iloc[0]
    assert mia.verdict == "holds" and mia.seeds == 3
    assert mia.improvement == pytest.approx(10.0) and mia.baseline == "none"
    verdicts = report.claim_verdicts(comparisons)
    row = verdicts[verdicts.claim == "lower_mia"].iloc[0]
    assert (row.verdict, row.holds, row.counted) == ("holds", 1, 1)


def test_member_subset_spread_can_make_a_difference_mixed():
    runs = _grid(addon_member=49.0)
    runs["mia_subset_sd"] = 3.0  # the attack moves by more than the difference
    mia = report.claim_comparisons(runs).query("claim == 'lower_mia'").iloc[0]
    assert mia.spread == pytest.approx(3.0) and mia.verdict == "mixed"


def test_higher_mia_does_not_hold():
    mia = report.claim_comparisons(_grid(addon_member=60.0)).query("claim == 'lower_mia'")
    assert mia.iloc[0].verdict == "does not hold"


def test_one_seed_comparisons_are_listed_but_not_counted():
    comparisons = report.claim_comparisons(_grid(addon_member=40.0, seeds=(0,)))
    mia = comparisons[comparisons.claim == "lower_mia"].iloc[0]
    assert mia.seeds == 1 and mia.verdict == "mixed"
    row = report.claim_verdicts(comparisons).query("claim == 'lower_mia'").iloc[0]
    assert (row.counted, row.one_seed, row.verdict) == (0, 1, "not tested")
    assert "not tested yet (1 comparison with one seed)" in report.verdict_markdown(
        report.claim_verdicts(comparisons))


def test_a_seed_on_which_the_baseline_diverged_is_left_out_of_the_pairs():
    records = [make_record(addon="none", seed=s, member=50.0) for s in range(2)]
    records.append(make_record(addon="none", seed=2, member=math.nan, diverged=1))
    records += [make_record(addon="and", seed=s, member=40.0 + s * 0.1) for s in range(3)]
    comparisons = report.claim_comparisons(report.runs_table(records))
    mia = comparisons[comparisons.claim == "lower_mia"].iloc[0]
    assert (mia.seeds, mia.diverged, mia.lost, mia.verdict) == (2, 1, 0, "holds")


def test_an_addon_at_its_own_rate_is_compared_with_the_method_at_its_usual_rate():
    records = [make_record(addon="none", seed=s, lr=0.03, member=50.0) for s in range(3)]
    records += [make_record(addon="none", seed=0, lr=0.3, member=50.0)]  # a one-seed pilot
    records += [make_record(addon="prob", seed=s, lr=0.06, member=40.0 + s * 0.1)
                for s in range(3)]
    mia = report.claim_comparisons(report.runs_table(records)).query("claim == 'lower_mia'")
    assert len(mia) == 1
    assert mia.iloc[0].baseline_lr == 0.03 and mia.iloc[0].lr == 0.06
    assert mia.iloc[0].verdict == "holds"


def test_a_missing_baseline_gives_no_comparison():
    records = [make_record(addon="focus", seed=s) for s in range(3)]
    assert report.claim_comparisons(report.runs_table(records)).empty


def test_convergence_counts_never_as_one_epoch_past_the_last():
    records = []
    for seed in range(3):
        records.append(make_record(addon="none", seed=seed, reached=None, epochs=5))
        records.append(make_record(addon="prob", seed=seed, reached=2 + seed % 2, epochs=5))
    comparisons = report.claim_comparisons(report.runs_table(records))
    faster = comparisons[comparisons.claim == "faster"].iloc[0]
    assert faster.improvement == pytest.approx(6 - 7 / 3)  # (6-2, 6-3, 6-2) mean
    assert faster.verdict == "holds"


def test_time_claim_uses_the_ratio_to_the_base_method():
    records = []
    for seed in range(3):
        records.append(make_record(addon="none", seed=seed, unlearn_s=10.0))
        records.append(make_record(addon="opt", seed=seed, unlearn_s=30.0 + seed))
    time = report.claim_comparisons(report.runs_table(records)).query("claim == 'time'")
    assert time.iloc[0].verdict == "does not hold"  # three times the base method's time


def test_time_claim_reads_cpu_seconds_where_both_runs_have_them():
    def timed(addon, seed, wall, cpu):
        record = make_record(addon=addon, seed=seed, unlearn_s=wall)
        if cpu is not None:
            record["final"]["unlearn_cpu_time"] = cpu
        return record
    # the base method ran on a loaded machine: 5x the wall time, the same CPU seconds
    records = [r for seed in range(3) for r in (timed("none", seed, 50.0, 10.0),
                                                timed("opt", seed, 11.0, 11.0 + seed * 0.1))]
    time = report.claim_comparisons(report.runs_table(records)).query("claim == 'time'").iloc[0]
    assert time.baseline_mean == pytest.approx(10.0) and time.verdict == "holds"  # ~1.1x
    # a run without CPU seconds (older records): wall time on both sides of that pair
    records[0]["final"].pop("unlearn_cpu_time")
    time = report.claim_comparisons(report.runs_table(records)).query("claim == 'time'").iloc[0]
    assert time.baseline_mean == pytest.approx(50.0)


def test_beats_baselines_compares_with_salun_and_ngplus():
    records = []
    for seed in range(3):
        records.append(make_record("srl_authors", "salun_step", seed, member=60.0))
        records.append(make_record("ngplus_authors", "none", seed, member=55.0))
        records.append(make_record("srl_authors", "focus", seed, member=40.0 + seed * 0.1))
    comparisons = report.claim_comparisons(report.runs_table(records))
    beats = comparisons[comparisons.claim == "beats_baselines"]
    assert set(beats.baseline) == {"SalUn", "NGPlus"}
    assert set(beats.metric) == {"mia_member", "abs_rUA", "epochs_to_target"}
    mia = beats[beats.metric == "mia_member"].set_index("baseline").verdict
    assert mia["SalUn"] == "holds" and mia["NGPlus"] == "holds"


def test_verdicts_are_per_scale_dataset_and_protocol():
    runs = _grid(40.0)
    other = _grid(60.0)
    other["dataset"] = "cifar10"
    other["setting"] = other.setting + "cifar"
    other["base_key"] = other.base_key + "cifar"
    verdicts = report.claim_verdicts(report.claim_comparisons(pd.concat([runs, other])))
    mia = verdicts[verdicts.claim == "lower_mia"].set_index("dataset").verdict
    assert mia["fashion_mnist"] == "holds" and mia["cifar10"] == "does not hold"


def test_baselines_at_the_treated_runs_rate_when_there_is_one():
    records = []
    for seed in range(3):
        for lr in (1e-4, 1e-3):
            records.append(make_record("srl_authors", "salun_step", seed, lr=lr, member=60.0))
            records.append(make_record("ngplus_authors", "none", seed, lr=lr, member=55.0))
        records.append(make_record("srl_authors", "focus", seed, lr=1e-3, member=40.0))
    beats = report.claim_comparisons(report.runs_table(records)).query(
        "claim == 'beats_baselines'")
    assert set(beats.baseline_lr) == {1e-3}


def test_verdict_markdown_is_a_table_per_protocol():
    runs = pd.concat([_grid(40.0), _grid(40.0, protocol="harness", method="srl")])
    text = report.verdict_markdown(report.claim_verdicts(report.claim_comparisons(runs)),
                                   {"cpu-authors": "6 of 6 configurations recorded"})
    lines = text.splitlines()
    assert lines[0] == ("| claim | authors' protocol, cpu, Fashion-MNIST "
                        "| literature's protocol, cpu, Fashion-MNIST |")
    assert all(line.count("|") == 4 for line in lines[:3])  # no stray pipe in a cell
    assert "6 of 6 configurations recorded" in text
    table = report.verdict_table(report.claim_verdicts(report.claim_comparisons(runs)))
    assert list(table.columns) == ["authors' protocol, cpu, Fashion-MNIST",
                                   "literature's protocol, cpu, Fashion-MNIST"]
    assert table.iloc[0, 0].startswith("holds (")


def test_mia_spread_table_compares_addon_differences_with_the_spread():
    runs = _grid(addon_member=40.0)
    table = report.mia_spread_table(runs)
    row = table.iloc[0]
    assert row.addons == 2 and row.largest_difference == pytest.approx(10.0)
    assert row.pairs == 1 and row.pairs_beyond == 1


def test_mia_spread_table_compares_addons_at_one_rate_and_on_one_dataset():
    # the same add-ons at the authors' rate and at a tuned one: two groups, never mixed
    records = [make_record(addon=addon, seed=seed, lr=lr, member=member + (lr or 0) * 1e4)
               for lr in (None, 0.001) for seed in range(2)
               for addon, member in (("none", 50.0), ("and", 40.0))]
    records.append(make_record(addon="and", seed=0, lr=0.003))   # a rate of its own: no group
    table = report.mia_spread_table(report.runs_table(records))
    assert table.protocol.tolist() == ["authors' protocol", "authors' protocol, tuned rate"]
    assert table.largest_difference.tolist() == pytest.approx([10.0, 10.0])


# --- files -------------------------------------------------------------------------------------

def _smoke_config(**kw):
    return Config(scale="smoke", dataset="digits", model="mlp", **kw)


def test_load_grid_records_lists_missing_and_unfinished(tmp_path):
    grid = {"fixed": {"scale": "smoke", "dataset": "digits", "model": "mlp"},
            "methods": ["srl"], "addons": ["none", "and", "prob"], "seeds": [0]}
    path = tmp_path / "grid.json"
    path.write_text(json.dumps(grid))
    done, missing, broken = (_smoke_config(method="srl", addon=a, seed=0)
                             for a in ("none", "and", "prob"))
    folder = tmp_path / "results" / "smoke"
    record = make_record()
    record.update(config=done.to_dict(), hash=config_hash(done))
    write_record(record, folder / f"{config_hash(done)}.json")
    (folder / f"{config_hash(broken)}.json").write_text("{not json")
    loaded = report.load_grid_records(path, results=tmp_path / "results")
    assert loaded.status == "1 of 3 configurations recorded (1 unfinished files)"
    assert [c.addon for c in loaded.missing] == ["and", "prob"]
    assert len(loaded.records) == 1 and loaded.problems[0][0] == f"{config_hash(broken)}.json"


def test_load_grids_keeps_each_record_once_and_names_its_grid(tmp_path):
    folder = tmp_path / "results" / "smoke"
    configs = [_smoke_config(method="srl", addon=a, seed=0) for a in ("none", "and")]
    for config in configs:
        record = make_record(addon=config.addon)
        record.update(config=config.to_dict(), hash=config_hash(config))
        write_record(record, folder / f"{config_hash(config)}.json")
    fixed = {"scale": "smoke", "dataset": "digits", "model": "mlp", "seeds": [0]}
    (tmp_path / "a.json").write_text(json.dumps(
        {"fixed": {k: v for k, v in fixed.items() if k != "seeds"}, "seeds": [0],
         "methods": ["srl"], "addons": ["none"]}))
    (tmp_path / "b.json").write_text(json.dumps(
        {"fixed": {k: v for k, v in fixed.items() if k != "seeds"}, "seeds": [0],
         "methods": ["srl"], "addons": ["none", "and"]}))
    grids, records, runs = report.load_grids([tmp_path / "a.json", tmp_path / "b.json"],
                                             "smoke", results=tmp_path / "results")
    assert [g.status for g in grids.values()] == ["1 of 1 configurations recorded",
                                                  "2 of 2 configurations recorded"]
    assert len(records) == 2 and runs.grid.tolist() == ["a", "b"]
    assert report.load_grids([tmp_path / "a.json"], "cpu", results=tmp_path / "results")[2].empty


def test_grid_configs_expands_sub_grids_with_the_shared_fixed():
    grid = {"fixed": {"scale": "smoke", "dataset": "digits", "model": "mlp", "epochs": 2},
            "grids": [{"seeds": [0], "methods": ["ft", "srl"], "addons": ["none"]},
                      {"seeds": [1], "methods": ["srl"], "addons": ["none", "and"]},
                      {"seeds": [0], "methods": ["srl"], "addons": ["none"]}]}  # a duplicate
    configs = report.grid_configs(grid)
    assert [(c.method, c.addon, c.seed) for c in configs] == [
        ("ft", "none", 0), ("srl", "none", 0), ("srl", "none", 1), ("srl", "and", 1)]
    assert all(c.epochs == 2 for c in configs)


def _ablation_grid(tmp_path):
    """A two-ablation grid (p; optimiser with and without PROB) with two records written."""
    grid = {"fixed": {"scale": "smoke", "dataset": "digits", "model": "mlp",
                      "method": "srl_authors", "protocol": "authors", "seed": 0},
            "grids": [{"addons": ["prob"], "p": [0.3, 0.5]},
                      {"addons": [{"addon": "prob", "p": 0.3}, "none"],
                       "optimizer": [{"optimizer": "adam"}, {"optimizer": "sgd", "lr": 1.0}]}]}
    path = tmp_path / "ablations.json"
    path.write_text(json.dumps(grid))
    folder = tmp_path / "results" / "smoke"
    shared = _smoke_config(method="srl_authors", protocol="authors", addon="prob", p=0.3)
    sgd = _smoke_config(method="srl_authors", protocol="authors", addon="none",
                        optimizer="sgd", lr=1.0)
    for config, kw in ((shared, {}), (sgd, {"diverged": 2})):
        record = make_record(addon=config.addon, **kw)
        record.update(config=config.to_dict(), hash=config_hash(config))
        write_record(record, folder / f"{config_hash(config)}.json")
    return path


def test_load_subgrids_reads_each_ablation_with_its_varied_fields(tmp_path):
    path = _ablation_grid(tmp_path)
    subs = report.load_subgrids(path, results=tmp_path / "results")
    assert [g.name for g in subs] == ["ablations/1", "ablations/2"]
    assert [g.varied for g in subs] == [["p"], ["addon", "optimizer", "lr"]]
    # the shared default setting is recorded once on disk and counted in both ablations
    assert [g.status for g in subs] == ["1 of 2 configurations recorded",
                                        "2 of 4 configurations recorded"]
    whole = report.load_grid_records(path, results=tmp_path / "results")
    assert whole.status == "2 of 5 configurations recorded"
    assert whole.varied == ["addon", "p", "optimizer", "lr"]


def test_ablation_table_fills_nothing_in_for_a_missing_configuration(tmp_path):
    subs = report.load_subgrids(_ablation_grid(tmp_path), results=tmp_path / "results")
    table = report.ablation_table(subs[1])
    assert table.value.tolist() == ["PROB, Adam, lr 0.0001", "PROB, SGD, lr 1",
                                    "none, Adam, lr 0.0001", "none, SGD, lr 1"]
    assert table.recorded.tolist() == [True, False, False, True]
    assert table.loc[~table.recorded, list(report.ABLATION_PANELS)].isna().all().all()
    first = table.iloc[0]
    assert first.kept_fraction == pytest.approx(50.0) and first.mia_member == 50.0
    assert table.iloc[3].diverged_epoch == 2
    assert report.ablation_table(subs[0]).addon.tolist() == ["prob", "prob"]  # not varied
    refs = report.references_table(subs[1].records)
    shown = report.ablation_display(table, refs)
    assert shown.index[:2].tolist() == ["retrained model", "original model"]
    assert shown.record.tolist()[2:] == ["yes", "not yet", "not yet", "diverged in epoch 2"]
    assert shown.loc["PROB,\u00a0SGD,\u00a0lr\u00a01", "UA"] == "–"
    assert shown.loc["retrained model", "|rUA|"] == "0.0"


def test_plot_ablation_draws_numeric_and_categorical_ablations(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    subs = report.load_subgrids(_ablation_grid(tmp_path), results=tmp_path / "results")
    refs = report.references_table(subs[1].records)
    for grid in subs:
        fig = report.plot_ablation(report.ablation_table(grid), refs, grid.name)
        assert len(fig.axes) == len(report.ABLATION_PANELS)
        plt.close(fig)
    empty = report.load_subgrids(_ablation_grid(tmp_path), results=tmp_path / "none")[0]
    plt.close(report.plot_ablation(report.ablation_table(empty),
                                   report.references_table([]), "none yet"))


def test_mia_agreement_reads_the_check_file(tmp_path):
    rows, by = report.mia_agreement(tmp_path / "absent.json")
    assert rows.empty and by.empty
    path = tmp_path / "mia_merge.json"
    path.write_text(json.dumps({"rows": [
        {"model": "a", "feature": "confidence", "full": 20.0, "merged": 20.3, "full_s": 10.0,
         "merged_s": 1.0},
        {"model": "b", "feature": "confidence", "full": 30.0, "merged": 29.9, "full_s": 10.0,
         "merged_s": 1.0}]}))
    rows, by = report.mia_agreement(path)
    assert rows.difference.max() == pytest.approx(0.3)
    assert by.iloc[0].models == 2 and by.iloc[0].speedup == pytest.approx(10.0)


def test_departures_table_reads_the_grid():
    config = _smoke_config(method="srl_authors", addon="focus", protocol="authors")
    table = report.departures_table([config]).set_index("aspect")["here"]
    assert table["optimiser"] == "adam, lr 0.0001" and table["masks"] == "leaky"
    assert table["epochs"] == "30 passes over D_f"


# --- tools/build_book.py: data inputs in the staleness hash ----------------------------------

def _build_book(monkeypatch, root):
    spec = importlib.util.spec_from_file_location("build_book", ROOT / "tools" / "build_book.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "ROOT", root)
    return module


def test_build_book_hash_follows_declared_inputs(tmp_path, monkeypatch):
    build = _build_book(monkeypatch, tmp_path)
    (tmp_path / "data").mkdir()
    reads, plain = tmp_path / "reads.ipynb", tmp_path / "plain.ipynb"
    for path, inputs in ((reads, ["data/*.json"]), (plain, None)):
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
        if inputs:
            nb.metadata["feasible"] = {"inputs": inputs}
        nbformat.write(nb, path)
    before = build.source_hash(reads), build.source_hash(plain)
    (tmp_path / "data" / "a.json").write_text("{}")
    (tmp_path / "data" / ".b.json").write_text("{}")  # a record being written: not an input
    after = build.source_hash(reads), build.source_hash(plain)
    assert after[0] != before[0] and after[1] == before[1]
    assert [p.name for p in build.input_files(nbformat.read(reads, as_version=4))] == ["a.json"]
    (tmp_path / "data" / "a.json").write_text('{"new": 1}')
    assert build.source_hash(reads) != after[0]


def test_build_book_hash_follows_what_a_page_shows_of_its_cells(tmp_path, monkeypatch):
    build = _build_book(monkeypatch, tmp_path)
    path = tmp_path / "page.ipynb"
    cell = nbformat.v4.new_code_cell("plot()")
    nb = nbformat.v4.new_notebook(cells=[cell])
    nbformat.write(nb, path)
    hashes = [build.source_hash(path)]
    cell.metadata["mystnb"] = {"figure": {"name": "fig-a", "caption": "A."},
                               "image": {"alt": "A line."}}
    nbformat.write(nb, path)
    hashes.append(build.source_hash(path))
    cell.metadata["mystnb"]["image"]["alt"] = "A rising line."
    nbformat.write(nb, path)
    hashes.append(build.source_hash(path))
    cell.metadata["tags"] = ["hide-input"]
    nbformat.write(nb, path)
    hashes.append(build.source_hash(path))
    assert len(set(hashes)) == 4
    cell.metadata["execution"] = {"iopub.status.busy": "2026-01-01"}  # not shown: same hash
    cell.outputs = [nbformat.v4.new_output("stream", text="stray")]
    nbformat.write(nb, path)
    assert build.source_hash(path) == hashes[-1]


def test_plot_stacked_draws_each_plot_once_into_one_figure_of_their_total_height():
    import matplotlib.pyplot as plt

    sizes = [(4.0, 2.0), (6.0, 3.0)]
    drawn = []

    alone = []

    def plot(size, label):
        def draw(into):
            fig = report._canvas(size, into)
            fig.subplots().set_title(label)
            drawn.append((label, into is None))
            if into is None:
                alone.append(fig)
            return fig
        return draw

    fig = report.plot_stacked([plot(sizes[0], "a"), plot(sizes[1], "b")])
    assert tuple(fig.get_size_inches()) == (6.0, 5.0)
    assert [ax.get_title() for ax in fig.get_axes()] == ["a", "b"]
    # each plot measured alone once (then closed), then drawn into its subfigure
    assert drawn == [("a", True), ("b", True), ("a", False), ("b", False)]
    open_figures = [plt.figure(n) for n in plt.get_fignums()]
    assert any(f is fig for f in open_figures)
    assert not any(f is a for f in open_figures for a in alone)  # the measured ones closed
    plt.close(fig)
    single = report.plot_stacked([plot(sizes[0], "c")])
    assert tuple(single.get_size_inches()) == sizes[0]
    plt.close(single)
    with pytest.raises(ValueError, match="at least one plot"):
        report.plot_stacked([])


def test_plot_gap_dots_one_row_per_setting_one_panel_per_scenario_diverged_at_the_edge():
    import matplotlib.pyplot as plt

    records = [make_record(m, a, s, scenario=sc, protocol="harness")
               for m in ("eupmu", "srl") for a in ("none", "and") for s in (0, 1)
               for sc in ("random", "class")]
    records[0]["final"]["avg_gap"] = 6.0
    records.append(make_record("eupmu", "and", 2, protocol="harness", diverged=1))
    runs = report.runs_table(records)
    fig = report.plot_gap_dots(runs, "t")
    assert len(fig.axes) == 2
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["EUPMU", "EUPMU + AND", "SRL", "SRL + AND"]
    crosses = [line for ax in fig.axes for line in ax.lines if line.get_marker() == "x"
               and len(line.get_xdata())]
    assert len(crosses) == 1 and crosses[0].get_xdata()[0] >= 6.0  # right of every dot
    plt.close(fig)
    plt.close(report.plot_gap_dots(report.runs_table([]), "empty"))


def test_verdicts_keep_the_authors_rate_apart_from_a_tuned_one():
    records = []
    for seed in range(2):
        for lr, member in ((None, 50.0), (1e-3, 40.0)):  # None: the protocol's 1e-4
            records.append(make_record(addon="none", seed=seed, lr=lr, member=80.0))
            records.append(make_record(addon="and", seed=seed, lr=lr, member=member + seed))
    runs = report.runs_table(records)
    assert sorted(set(runs.lr)) == [1e-4, 1e-3]
    verdicts = report.claim_verdicts(report.claim_comparisons(runs))
    mia = verdicts[verdicts.claim == "lower_mia"].set_index("protocol")
    assert list(mia.index) == ["authors", "authors_tuned"]
    assert (mia.counted == 1).all()
    table = report.verdict_table(verdicts)
    assert "authors' protocol, tuned rate, cpu, Fashion-MNIST" in table.columns


def test_mia_closeness_reads_the_member_rate_against_the_retrained_models():
    # the retrained model's member rate is 80 (make_record); without add-on the method
    # overshoots to 50, with AND it comes back to 75: higher (not "lower MIA"), but closer
    records = [make_record(addon=a, seed=s, member=m, protocol="harness")
               for s in range(2) for a, m in (("none", 50.0), ("and", 75.0))]
    records.append(make_record(addon="and", seed=2, member=10.0, protocol="harness",
                               diverged=1))  # left out
    table = report.mia_closeness(report.runs_table(records))
    assert len(table) == 1
    row = table.iloc[0]
    assert (row.retrained, row.member_none, row.member) == (80.0, 50.0, 75.0)
    assert (row.gap_none, row.gap) == (30.0, 5.0)
    assert not row.lower and row.closer
    assert row.seeds == 2 and row.protocol == "literature's protocol"
    assert report.mia_closeness(report.runs_table([])).empty


def test_mia_closeness_takes_the_claims_baseline_for_an_addon_at_its_own_rate():
    # AND at its own rate 0.01 has no same-rate run without add-on: like claim_comparisons,
    # it is read against the method's most-seeded setting without add-on (three seeds at 0.1)
    records = [make_record(addon="none", seed=s, member=50.0, protocol="harness", lr=0.1)
               for s in range(3)]
    records.append(make_record(addon="none", seed=0, member=20.0, protocol="harness", lr=0.3))
    records += [make_record(addon="and", seed=s, member=75.0, protocol="harness", lr=0.01)
                for s in range(2)]
    runs = report.runs_table(records)
    row = report.mia_closeness(runs).iloc[0]
    assert (row.lr, row.member_none, row.member) == (0.01, 50.0, 75.0)
    mia = report.claim_comparisons(runs)
    mia = mia[(mia.claim == "lower_mia") & (mia.addon == "and")]
    assert set(mia.baseline_mean) == {50.0}


def test_an_addon_at_its_own_rate_meets_the_base_method_at_its_own_rate():
    # the fair comparison: AND at its rate on seeds 1-3; the method alone at the base rate on
    # seeds 0-2 and at its own rate on seeds 1-3: the baseline pairs all three seeds
    records = [make_record(addon="none", seed=s, member=50.0, protocol="harness", lr=0.1)
               for s in range(3)]
    records += [make_record(addon="none", seed=s, member=30.0, protocol="harness", lr=0.02)
                for s in (1, 2, 3)]
    records += [make_record(addon="and", seed=s, member=20.0, protocol="harness", lr=0.05)
                for s in (1, 2, 3)]
    runs = report.runs_table(records)
    mia = report.claim_comparisons(runs)
    mia = mia[(mia.claim == "lower_mia") & (mia.addon == "and")].iloc[0]
    assert (mia.baseline_lr, mia.baseline_mean, mia.seeds) == (0.02, 30.0, 3)
    assert report.mia_closeness(runs).iloc[0].member_none == 30.0


def test_ranking_orders_settings_by_their_mean_and_puts_all_diverged_last():
    records = [make_record(m, a, s, protocol="harness") for m, a in
               (("srl", "none"), ("srl", "and"), ("eupmu", "none")) for s in range(2)]
    gaps = {("srl", "none"): 10.0, ("srl", "and"): 3.0, ("eupmu", "none"): 30.0}
    for r in records:
        config = r["config"]
        r["final"]["avg_gap"] = gaps[(config["method"], config["addon"])] + config["seed"]
    records.append(make_record("ngplus", "prob", 0, protocol="harness", diverged=1))
    table = report.ranking(report.runs_table(records))
    assert list(table.setting) == ["SRL + AND", "SRL + none", "EUPMU + none", "NGPlus + PROB"]
    assert list(table["rank"]) == [1, 2, 3, 4]
    assert table.iloc[0]["mean"] == 3.5 and table.iloc[0].sd == pytest.approx(0.7071, 1e-3)
    assert table.iloc[-1].diverged == 1 and math.isnan(table.iloc[-1]["mean"])
    assert report.ranking(report.runs_table([])).empty


def test_a_treated_run_that_diverges_where_the_base_did_not_counts_against_the_claim():
    def runs(diverging):
        records = []
        for seed in range(3):
            records.append(make_record(addon="none", seed=seed, member=80.0))
            records.append(make_record(addon="and", seed=seed, member=60.0 + seed * 0.1,
                                       diverged=1 if seed in diverging else None))
        return report.claim_comparisons(report.runs_table(records))

    def mia(table):
        return table.query("claim == 'lower_mia'").iloc[0]

    assert mia(runs(())).verdict == "holds"               # 20 points lower on every seed
    one = mia(runs((0,)))
    assert (one.lost, one.seeds, one.verdict) == (1, 3, "mixed")  # cannot hold any more
    two = mia(runs((0, 1)))
    assert (two.lost, two.seeds, two.verdict) == (2, 3, "does not hold")
    time = runs((0, 1)).query("claim == 'time'").iloc[0]
    assert time.lost == 0                                 # a stopped run says nothing on time


def test_forest_plot_labels_say_where_the_addon_diverged():
    import matplotlib.pyplot as plt

    records = []
    for seed in range(3):
        records.append(make_record(addon="none", seed=seed, member=80.0))
        records.append(make_record(addon="and", seed=seed, member=60.0,
                                   diverged=1 if seed else None))
    comparisons = report.claim_comparisons(report.runs_table(records))
    fig = report.plot_comparisons(comparisons.query("claim == 'lower_mia'"), "t")
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["SRL + AND, random 10% (diverged on 2 of 3 seeds)"]
    plt.close(fig)
    for record in records[::2]:  # now the baseline diverges on every seed: nothing to pair
        record["diverged_epoch"] = 1
    comparisons = report.claim_comparisons(report.runs_table(records))
    fig = report.plot_comparisons(comparisons.query("claim == 'lower_mia'"), "t")
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["SRL + AND, random 10% (the baseline diverged)"]
    plt.close(fig)


def test_plot_mia_closeness_one_panel_per_protocol_one_row_per_setting():
    import matplotlib.pyplot as plt

    records = [make_record(addon=a, seed=s, member=m, protocol=p)
               for p in ("harness", "authors") for s in range(2)
               for a, m in (("none", 50.0), ("and", 75.0), ("prob", 40.0))]
    fig = report.plot_mia_closeness(report.mia_closeness(report.runs_table(records)))
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["literature's protocol", "authors' protocol"]
    assert len(panels[0].get_yticklabels()) == 2
    plt.close(fig)


def test_rerun_table_sets_the_two_runs_of_a_configuration_side_by_side():
    first = make_record(addon="focus", seed=0)
    first.update(hash="abc", environment={"threads": 2, "git_commit": "0123456789abcdef"})
    again = make_record(addon="focus", seed=0, diverged=2)
    again.update(hash="abc", environment={"threads": 1, "git_commit": "fedcba9876543210"})
    again["final"]["avg_gap"] = None  # a diverged run has no gap
    other = dict(make_record(seed=1), hash="zzz")  # rerun of nothing: left out
    table = report.rerun_table([first, other], [again])
    assert len(table) == 1
    row = table.iloc[0]
    assert (row.addon, row.threads_first, row.threads_again) == ("focus", 2, 1)
    assert (row.commit_first, row.commit_again) == ("0123456789", "fedcba9876")
    assert row.avg_gap_first == 2.0 and math.isnan(row.avg_gap_again)
    assert math.isnan(row.diverged_epoch_first) and row.diverged_epoch_again == 2
    assert report.rerun_table([], []).empty
    view = report.rerun_view(table).iloc[0]
    assert view.setting == "SRL + F, authors' protocol, random 10%, seed 0"
    assert (view.threads, view["Avg. Gap"]) == ("2 → 1", "2.00 → –")
    assert view["diverged at epoch"] == "– → 2"
    assert list(report.rerun_view(report.rerun_table([], [])).columns)[0] == "setting"


def _write_finished(folder, **fields):
    """A record file that read_record calls finished: named by its configuration's hash."""
    record = make_record(method="srl", **fields)
    record["hash"] = config_hash(Config.from_dict(record["config"]))
    (folder / f"{record['hash']}.json").write_text(json.dumps(record))
    return record["hash"]


def test_read_records_reads_a_relative_pattern_from_the_repository_root(tmp_path, monkeypatch):
    folder = tmp_path / "results" / "cpu" / "superseded"
    folder.mkdir(parents=True)
    hashes = sorted(_write_finished(folder, seed=seed) for seed in (0, 1))
    (folder / ".being-written.json").write_text("{")
    monkeypatch.setattr(report, "ROOT", tmp_path)
    monkeypatch.chdir(folder)  # where a notebook runs: not the root
    found = report.read_records("results/cpu/superseded/*.json")
    assert [r["hash"] for r in found] == hashes
    assert report.read_records(str(folder / "*.json")) == found


@pytest.mark.parametrize("text, problem", [
    ("{\"hash\": \"0123456789abcdef\"", "not valid JSON"),
    ("{\"hash\": \"fedcba9876543210\"}", "not its file name's"),
])
def test_read_records_names_a_file_that_is_not_a_finished_record(tmp_path, text, problem):
    _write_finished(tmp_path)
    (tmp_path / "0123456789abcdef.json").write_text(text)
    with pytest.raises(ValueError, match=problem) as err:
        report.read_records(str(tmp_path / "*.json"))
    assert "0123456789abcdef.json" in str(err.value)


def test_claim_ties_counts_the_comparisons_lost_by_a_tie():
    # every run reaches the target in epoch 1 (UA 10 from the first epoch): AND cannot be
    # faster, and the rule calls the tie "does not hold"
    records = []
    for seed in range(2):
        for addon in ("none", "and"):
            r = make_record(addon=addon, seed=seed, reached=1, lr=0.001)
            records.append(r)
    comparisons = report.claim_comparisons(report.runs_table(records))
    faster = comparisons[comparisons.claim == "faster"]
    assert set(faster.verdict) == {"does not hold"}
    table = report.claim_ties(comparisons, "faster")
    assert table.to_dict("records") == [{
        "scale": "cpu", "dataset": "fashion_mnist",
        "protocol": "authors' protocol, tuned rate", "scenario": "random 10%",
        "counted": len(faster), "does_not_hold": len(faster), "ties": len(faster)}]
    assert report.claim_ties(comparisons.iloc[:0], "faster").empty


def test_claim_ties_keeps_datasets_apart_as_the_verdict_table_does():
    records = []
    for dataset in ("fashion_mnist", "cifar10"):
        for seed in range(2):
            for addon in ("none", "and"):
                record = make_record(addon=addon, seed=seed, reached=1, lr=0.001)
                record["config"]["dataset"] = dataset
                records.append(record)
    table = report.claim_ties(report.claim_comparisons(report.runs_table(records)), "faster")
    assert sorted(table.dataset) == ["cifar10", "fashion_mnist"]
    assert table.ties.tolist() == [1, 1]


def test_a_run_that_never_reaches_the_target_counts_one_epoch_past_its_last():
    # neither side ever gets there in 3 epochs: both count 4, a tie, in the means as in the rule
    records = [make_record(addon=addon, seed=seed, reached=None, epochs=3)
               for seed in range(2) for addon in ("none", "and")]
    comparisons = report.claim_comparisons(report.runs_table(records))
    faster = comparisons[comparisons.claim == "faster"].iloc[0]
    assert (faster.treated_mean, faster.baseline_mean, faster.improvement) == (4.0, 4.0, 0.0)
    assert faster.verdict == "does not hold"
    assert report.claim_ties(comparisons, "faster").ties.tolist() == [1]


def test_rate_pilot_marks_the_pilots_own_rate_runs_only():
    runs = pd.DataFrame({"grid": ["cpu-fair", "cpu-fair", "cpu-literature", "cpu-fair-chosen"],
                         "renorm": [False, True, False, False]})
    assert report.rate_pilot(runs, "cpu-fair").tolist() == [True, False, False, False]
    assert not report.rate_pilot(runs.iloc[:0], "cpu-fair").any()


def test_timing_table_keeps_datasets_and_models_apart():
    fashion = make_record(addon="none")
    cifar = make_record(addon="none")
    cifar["config"].update(dataset="cifar10", model="vgg16_bn")
    table = report.timing_table([fashion, cifar, make_record(addon="and")])
    assert table[["dataset", "model", "runs"]].values.tolist() == [
        ["cifar10", "vgg16_bn", 1], ["fashion_mnist", "small_cnn", 2]]


def test_reference_training_counts_each_shared_model_once():
    def run(method, seed):
        r = make_record(addon="none", seed=seed, method=method)
        for kind, seconds in (("original", 300.0), ("retrained", 200.0)):
            r[kind]["train"]["key"] = f"{kind}-{seed}"
            r["timings"][f"train_{kind}_trained_in_s"] = seconds + seed
        return r
    records = [run("srl", 0), run("ngplus", 0), run("srl", 1)]   # seed 0's models shared
    assert report.reference_training(records) == (4, 300 + 200 + 301 + 201)
    assert report.timing_table(records).train_s.tolist() == [500, 1002]  # ngplus, srl rows
    assert report.reference_training([make_record()]) == (0, 0.0)         # no key: not trained


def test_timing_table_leaves_out_reference_training_done_inside_a_run():
    made = make_record(addon="none", seed=0)
    made["timings"] = {"total_s": 1000.0, "train_original_cached": False,
                       "train_original_s": 300.0, "train_original_trained_in_s": 300.0,
                       "train_retrained_cached": True, "train_retrained_s": 0.1,
                       "train_retrained_trained_in_s": 250.0}
    older = make_record(addon="and", seed=0)      # no `cached` field: made when the times match
    older["timings"] = {"total_s": 900.0, "train_original_s": 0.1,
                        "train_original_trained_in_s": 300.0, "train_retrained_s": 250.0,
                        "train_retrained_trained_in_s": 250.0}
    table = report.timing_table([made, older])
    assert table.total_s.tolist() == [(1000 - 300) + (900 - 250)]


def test_a_default_rate_named_or_left_out_is_one_setting():
    left_out = make_record(addon="and", seed=0, protocol="harness", method="srl")
    named = make_record(addon="and", seed=1, protocol="harness", method="srl", lr=0.03)
    runs = report.runs_table([left_out, named])   # the method's default_lr is 0.03
    assert runs.setting.nunique() == 1 and runs.lr.tolist() == [0.03, 0.03]


# --- the fair comparison ---------------------------------------------------------------------

def _fair_records():
    """SRL at its base rate 0.03 without add-on (seeds 0-2) and with AND (seeds 0-2, also
    renormed), and AND at its own rate 0.015 on seeds 0-3 (seed 0 chose it)."""
    def run(addon, seed, lr, renorm=False, **numbers):
        record = make_record("srl", addon, seed, protocol="harness", lr=lr, **numbers)
        record["config"]["renorm"] = renorm
        return record
    records = [run("none", s, 0.03) for s in range(3)]
    records += [run("and", s, 0.03, ua=20.0) for s in range(3)]
    records += [run("and", s, 0.03, renorm=True) for s in range(3)]
    records += [run("and", s, 0.015) for s in range(4)]
    records[-1]["final"]["avg_gap"] = 4.0
    records.append(run("and", 1, 0.06, diverged=2))  # a rate that is no point
    return records


def test_fair_points_put_each_run_under_its_point_and_leave_the_choosing_seed_out():
    runs = report.runs_table(_fair_records())
    points = report.fair_points(runs, {("srl", "none"): 0.03, ("srl", "and"): 0.015},
                                {"srl": 0.03})
    counts = points.groupby(["addon", "point"]).seed.apply(sorted).to_dict()
    assert counts == {("and", "base rate"): [0, 1, 2], ("and", "renorm"): [0, 1, 2],
                      ("and", "own rate"): [1, 2, 3], ("none", "base rate"): [0, 1, 2],
                      ("none", "own rate"): [1, 2]}
    assert set(points[points.point == "own rate"].rate_ratio.round(6)) == {0.5, 1.0}
    assert 0.06 not in set(points.lr)


def test_fair_points_name_a_method_without_base_rate():
    runs = report.runs_table(_fair_records())
    with pytest.raises(ValueError, match="'srl'"):
        report.fair_points(runs, {("srl", "and"): 0.015}, {"ngplus": 0.2})


def test_fair_table_one_row_per_setting_means_and_diverged_runs_named():
    records = _fair_records()
    records[0]["diverged_epoch"] = 1
    points = report.fair_points(report.runs_table(records),
                                {("srl", "none"): 0.03, ("srl", "and"): 0.015}, {"srl": 0.03})
    table = report.fair_table(points)
    assert list(table.index) == ["SRL", "SRL + AND"]
    assert list(table.columns) == ["base rate", "renorm", "own rate", "own rate is"]
    assert table.loc["SRL", "base rate"] == "2.0\u00a0±\u00a00.0 (1 of 3 diverged)"
    assert table.loc["SRL", "renorm"] == "–"
    assert table.loc["SRL + AND", "own rate"] == "2.7\u00a0±\u00a01.2"  # (2 + 2 + 4) / 3
    assert table.loc["SRL + AND", "own rate is"] == "0.5× base"


def test_plot_fair_one_panel_per_method_crosses_count_the_diverged():
    import matplotlib.pyplot as plt

    records = _fair_records() + [make_record("ngplus", "none", s, protocol="harness", lr=0.2,
                                             diverged=1) for s in range(2)]
    points = report.fair_points(report.runs_table(records),
                                {("srl", "and"): 0.015, ("ngplus", "none"): 0.2},
                                {"srl": 0.03, "ngplus": 0.2})
    fig = report.plot_fair(points, "t")
    assert [ax.get_title() for ax in fig.axes] == ["SRL", "NGPlus"]
    crosses = [line for ax in fig.axes for line in ax.lines if line.get_marker() == "x"]
    assert len(crosses) == 2  # NGPlus without add-on: base rate and own rate, both diverged
    # seeds 0 and 1 at the base rate, seed 1 alone at the own rate (seed 0 chose it)
    assert sorted(t.get_text() for ax in fig.axes for t in ax.texts) == ["1", "2"]
    plt.close(fig)


def test_verdict_table_puts_the_tested_columns_first():
    verdicts = pd.DataFrame([
        {"claim": "lower_mia", "statement": "", "scale": "cpu", "dataset": d, "protocol": "authors",
         "verdict": v, "holds": 0, "does_not_hold": 0, "mixed": 2 * (v == "mixed"),
         "counted": 2 * (v == "mixed"), "one_seed": 3 * (v != "mixed")}
        for d, v in (("cifar10", "not tested"), ("fashion_mnist", "mixed"))])
    table = report.verdict_table(verdicts)
    assert [c.split(", ")[-1] for c in table.columns] == ["Fashion-MNIST", "CIFAR-10"]
