"""Tests for the learning-rate rules of feasible.tuning on hand-made records."""
from __future__ import annotations

import pytest

from feasible.tuning import closest_to_retrained, lowest_avg_gap


def record(method, lr, ua, ta, gap=1.0, addon="none", seed=0, diverged=None, h="x"):
    return {"hash": h, "config": {"method": method, "lr": lr, "addon": addon, "seed": seed},
            "method": {"default_lr": 0.5}, "diverged_epoch": diverged,
            "original": {"metrics": {"TA": 90.0}}, "retrained": {"metrics": {"UA": 9.0}},
            "final": {"UA": ua, "TA": ta, "avg_gap": gap}}


def test_closest_to_retrained_keeps_test_accuracy_and_skips_diverged_runs():
    chosen = closest_to_retrained([
        record("srl", 1e-4, 1.0, 89.5), record("srl", 1e-3, 8.0, 88.0, h="pick"),
        record("srl", 3e-3, 9.0, 80.0),              # UA on target but TA fell 10 points
        record("srl", 1e-2, 9.0, 89.0, diverged=3),  # diverged: never chosen
        record("ngplus", None, 5.0, 89.0),           # the method's default rate, 0.5
        record("ngplus", 0.1, 13.0, 89.0)])          # |13 - 9| = |5 - 9|: the smaller rate wins
    assert chosen["srl"] == {"lr": 1e-3, "score": pytest.approx(1.0), "hash": "pick"}
    assert chosen["ngplus"]["lr"] == 0.1


def test_lowest_avg_gap_per_method_and_addon():
    chosen = lowest_avg_gap([record("srl", 0.03, 5, 89, gap=2.0, addon="prob"),
                             record("srl", 0.06, 5, 89, gap=1.5, addon="prob"),
                             record("srl", 0.03, 5, 89, gap=1.0, addon="and"),
                             record("srl", 0.12, 5, 89, gap=float("nan"), addon="and")])
    assert {k: v["lr"] for k, v in chosen.items()} == {("srl", "prob"): 0.06, ("srl", "and"): 0.03}


def test_rules_read_seed_zero_only_and_say_so():
    with pytest.raises(ValueError, match="seed 0 only; record x has seed 1"):
        lowest_avg_gap([record("srl", 0.03, 5, 89, seed=1)])
    with pytest.raises(ValueError, match="add-on 'prob'"):
        closest_to_retrained([record("srl", 0.03, 5, 89, addon="prob")])
    with pytest.raises(ValueError, match="'ta_drop'"):
        closest_to_retrained([], ta_drop=-1)


def _choose_lr():
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parent.parent / "tools" / "choose_lr.py"
    spec = importlib.util.spec_from_file_location("choose_lr", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_with_rates_sets_the_chosen_rate_in_every_subgrid_and_only_there():
    grid = {"fixed": {"epochs": 5}, "grids": [
        {"methods": ["eupmu", "srl"], "addons": ["none"]},
        {"methods": [{"method": "minnorm_og", "lr": 0.05}, "eupmu"], "addons": ["none"]}]}
    out = _choose_lr().with_rates(grid, {"eupmu": 0.1, "minnorm_og": 0.2})
    assert out["grids"][0]["methods"] == [{"method": "eupmu", "lr": 0.1}, "srl"]
    assert out["grids"][1]["methods"] == [{"method": "minnorm_og", "lr": 0.2},
                                          {"method": "eupmu", "lr": 0.1}]
    assert grid["grids"][0]["methods"] == ["eupmu", "srl"]      # the input is left alone
    with pytest.raises(ValueError, match="no method"):
        _choose_lr().with_rates(grid, {"ga": 0.1})


def test_edge_advice_extends_the_range_only_while_the_method_beats_not_unlearning():
    advice = _choose_lr().edge_advice
    pilot = [0.01, 0.1, 1.0]
    # the original model: UA 0 against the retrained model's 8, all else equal -> Avg. Gap 2
    refs = {"original": {"metrics": {"UA": 0.0, "RA": 99.0, "TA": 90.0, "MIA": 10.0}},
            "retrained": {"metrics": {"UA": 8.0, "RA": 99.0, "TA": 90.0, "MIA": 10.0}}}
    found = [{"hash": "a", **refs}]
    assert "inside" in advice("m", {"lr": 0.1, "score": 1.0, "hash": "a"}, pilot, found)
    assert advice("m", {"lr": 0.01, "score": 1.5, "hash": "a"}, pilot, found).startswith(
        "warning: m's chosen rate 0.01 is at the edge")             # 1.5 < 2: keep looking
    assert "the range stops there" in advice("m", {"lr": 0.01, "score": 2.5, "hash": "a"},
                                             pilot, found)         # no better than doing nothing


def test_subgrid_of_takes_the_models_sub_grid_with_the_shared_fixed():
    grid = {"fixed": {"scale": "cpu"}, "grids": [
        {"fixed": {"model": "vgg16_bn", "seed": 0}, "methods": ["srl_authors"]},
        {"fixed": {"model": "resnet18"}, "methods": ["srl"]}]}
    sub = _choose_lr().subgrid_of(grid, "vgg16_bn")
    assert sub == {"fixed": {"scale": "cpu", "model": "vgg16_bn", "seed": 0},
                   "methods": ["srl_authors"]}
    assert _choose_lr().subgrid_of({"methods": ["ft"]}, "x") == {"methods": ["ft"]}
    with pytest.raises(ValueError, match="'mlp'"):
        _choose_lr().subgrid_of(grid, "mlp")


def test_seeds_said_names_the_grids_seeds_and_the_pilots():
    said = _choose_lr().seeds_said
    assert said({"fixed": {"model": "vgg16_bn"}, "seeds": [0, 1, 2]}) == (
        "Seeds 0, 1, 2 (the rate was chosen on seed 0).")
    assert said({"fixed": {"seed": 0}}) == "Seed 0 (the rate was chosen on seed 0)."
