"""Tests of feasible.experiment: configuration validation, hashes, records, caching, determinism."""
from __future__ import annotations

import dataclasses
import json
import re

import pytest

import feasible.data
from feasible.experiment import (
    MEMBER_SUBSETS,
    METRICS_VERSION,
    SCALES,
    Config,
    config_hash,
    hashed_fields,
    record_path,
    run,
    without_timings,
)
from feasible.train import TrainConfig

SMOKE = dict(scale="smoke", epochs=2)


pytestmark = pytest.mark.usefixtures("isolated_dirs")


@pytest.mark.parametrize("values, words", [
    (dict(dataset="mnist"), "Unknown dataset 'mnist'; expected one of 'cifar10'"),
    (dict(model="resnet50"), "Unknown model 'resnet50'; expected one of"),
    (dict(scale="huge"), "Unknown scale 'huge'; expected one of 'smoke', 'cpu', 'paper'"),
    (dict(scenario="subclass"), "Unknown scenario 'subclass'; expected one of 'random', 'class'"),
    (dict(forget_fraction=1.5), "The 'forget_fraction' field of Config must be a float in the "
                                "open interval (0, 1) for scenario 'random'. Got 1.5 instead."),
    (dict(forget_fraction=0.0), "'forget_fraction'"),
    (dict(forget_class=3), "The 'forget_class' field of Config must be None for scenario 'random'"),
    (dict(scenario="class"), "The 'forget_class' field of Config must be an int in [0, 10) for "
                             "scenario 'class' on digits. Got None instead."),
    (dict(scenario="class", forget_class=10), "an int in [0, 10)"),
    (dict(scenario="class", forget_class=2, forget_fraction=0.1),
     "The 'forget_fraction' field of Config must be None for scenario 'class'"),
    (dict(seed=-1), "The 'seed' field of Config must be an int >= 0. Got -1 instead."),
    (dict(data_root=3), "'data_root'"),
    (dict(train=TrainConfig("small_cnn")), "a recipe for the configuration's model 'mlp'"),
    (dict(train={"model": "mlp"}), "'train' field of Config must be None or a"),
    (dict(method="ngplsu"), "Unknown method 'ngplsu'; expected one of 'ft'"),
    (dict(addon="porb"), "Unknown add-on 'porb'; expected one of 'none', 'salun'"),
    (dict(p=1.5), "The 'p' field of Config must be a float in the open interval"),
    (dict(epochs=0), "'epochs'"),
    (dict(k=1), "'k'"),
    (dict(eval_every=0), "The 'eval_every' field of Config must be an int >= 1 (epochs). Got 0"),
    (dict(eval_every=2.0), "'eval_every'"),
])
def test_config_rejects_bad_values(values, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        Config(**{"method": "ft", **SMOKE, **values})


def test_config_resolves_scale_defaults_once_and_is_frozen():
    config = Config(method="ft", scale="smoke")
    assert (config.dataset, config.model, config.forget_fraction) == ("digits", "mlp", 0.1)
    assert Config(method="ft").dataset == "fashion_mnist"  # the cpu scale is the default
    assert config.train_config() == SCALES["smoke"].recipe("digits", "mlp", 0)
    assert Config(method="ft", scale="smoke", seed=3).train_config().seed == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lr = 0.1  # type: ignore[misc]
    # an explicitly set dataset or model outside the scale's lists is fine
    assert Config(method="ft", scale="smoke", model="small_cnn").train_config().model == "small_cnn"


def test_config_dict_round_trip():
    config = Config(method="ngplus", addon="prob", train=TrainConfig("mlp", epochs=3), **SMOKE)
    again = Config.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and config_hash(again) == config_hash(config)
    with pytest.raises(ValueError, match="Unknown Config field 'learning_rate'"):
        Config.from_dict({"method": "ft", "learning_rate": 0.1})


def _hash(**values):
    return config_hash(Config(**{**SMOKE, **values}))


def test_hash_ignores_unused_keys_and_follows_used_ones():
    base = _hash(method="ft", addon="none")
    assert len(base) == 16
    # keys the method and add-on do not read
    assert _hash(method="ft", addon="none", p=0.3) == base
    assert _hash(method="ft", addon="none", ngplus_a=0.5) == base
    assert _hash(method="ft", addon="none", k=4, noise="per_sample") == base
    assert _hash(method="ft", addon="none", saliency_fraction=0.2) == base
    assert _hash(method="ft", addon="none", data_root="/elsewhere") == base
    # defaults written out equal defaults left implicit
    assert _hash(method="ft", addon="none", lr=Config(method="ft").unlearn_config().learning_rate) \
        == base
    assert _hash(method="ft", addon="none",
                 train=SCALES["smoke"].recipe("digits", "mlp", 0)) == base
    # keys that are read
    assert _hash(method="ft", addon="prob", p=0.3) != _hash(method="ft", addon="prob")
    assert _hash(method="ngplus", ngplus_a=0.5) != _hash(method="ngplus")
    assert _hash(method="l1_sparse", l1_gamma=1e-3) != _hash(method="l1_sparse")
    assert _hash(method="ft", addon="salun", saliency_fraction=0.2) != _hash(method="ft",
                                                                            addon="salun")
    for changed in (dict(seed=1), dict(lr=0.01), dict(epochs=3), dict(addon="and"),
                    dict(forget_fraction=0.5), dict(model="small_cnn"),
                    dict(train=TrainConfig("mlp", epochs=3))):
        assert _hash(**{"method": "ft", "addon": "none", **changed}) != base, changed
    assert "p" not in hashed_fields(Config(method="ft", **SMOKE))["unlearn"]


RECORD_KEYS = {"config", "hash", "train_config", "method", "scale", "environment", "data",
               "original", "retrained", "ua_gap_original_retrained", "epochs", "final",
               "diverged_epoch", "timings"}
EPOCH_KEYS = {"UA", "RA", "TA", "MIA", "gap_UA", "gap_RA", "gap_TA", "gap_MIA", "avg_gap",
              "ua_ratio", "rUA", "FID", "MIA_member_confidence", "MIA_efficacy_confidence",
              "kept_fraction", "kept_fraction_active", "masked_moved_fraction", "wall_time",
              "cpu_time", "epoch"}


def test_run_writes_a_full_record_and_returns_it_cached(monkeypatch):
    config = Config(method="ngplus", addon="prob", **SMOKE)
    record = run(config)
    path = record_path(config)
    assert path.exists() and path.parent.name == "smoke" and path.stem == record["hash"]
    assert json.loads(path.read_text()) == record
    assert set(record) >= RECORD_KEYS
    assert record["config"]["method"] == "ngplus" and record["hash"] == config_hash(config)
    assert {"torch", "python", "device", "threads", "git_commit"} <= set(record["environment"])
    data = record["data"]
    assert data["train_size"] == data["forget_size"] + data["retain_size"]
    assert data["forget_size"] == round(0.1 * data["train_size"])
    assert "load_digits" in data["source"] and len(data["indices_hash"]) >= 8
    for name in ("original", "retrained"):
        assert set(record[name]["metrics"]) == {"UA", "RA", "TA", "MIA", "rUA", "FID",
                                                "MIA_member_confidence",
                                                "MIA_efficacy_confidence", "MIA_subsets"}
        assert len(record[name]["metrics"]["MIA_subsets"]["confidence"]) == MEMBER_SUBSETS
        assert record[name]["train"]["memorised"]
    assert len(record["final"]["MIA_subsets"]["confidence"]) == MEMBER_SUBSETS
    assert record["original"]["metrics"]["UA"] < record["retrained"]["metrics"]["UA"]
    assert record["ua_gap_original_retrained"] == pytest.approx(
        record["retrained"]["metrics"]["UA"] - record["original"]["metrics"]["UA"])
    assert len(record["epochs"]) == 2
    for epoch in record["epochs"]:
        assert set(epoch) >= EPOCH_KEYS
        assert 0 < epoch["kept_fraction"] < 1  # PROB masks some coordinates
    assert set(record["final"]) >= EPOCH_KEYS - {"kept_fraction", "kept_fraction_active",
                                                 "masked_moved_fraction", "wall_time",
                                                 "cpu_time", "epoch"} | {
        "epochs_to_reach_retrain_ua", "unlearn_wall_time", "unlearn_cpu_time"}
    assert record["diverged_epoch"] is None and record["timings"]["total_s"] > 0
    assert record["final"]["unlearn_cpu_time"] > 0  # CPU seconds: the cost, whatever the load
    assert record["timings"]["unlearn_cpu_s"] == record["final"]["unlearn_cpu_time"]

    def boom(*args, **kwargs):
        raise AssertionError("recomputed a recorded configuration")

    monkeypatch.setattr(feasible.data, "load", boom)
    assert run(config) == record  # the stored record, nothing recomputed
    with pytest.raises(AssertionError, match="recomputed"):
        run(config, force=True)


def test_records_are_deterministic(tmp_path, monkeypatch):
    config = Config(method="srl", addon="focus", scenario="class", forget_class=3, **SMOKE)
    first = run(config)
    assert first["data"]["test_size_kept"] < first["data"]["test_size"]
    assert first["original"]["metrics"]["UA"] == 0.0
    again = run(config, force=True)  # same cache: checkpoints reused
    monkeypatch.setenv("FEASIBLE_CACHE", str(tmp_path / "fresh"))  # everything retrained
    fresh = run(config, force=True)
    assert not fresh["timings"]["train_original_cached"]
    assert without_timings(first) == without_timings(again) == without_timings(fresh)
    assert "timings" not in without_timings(first)


def test_reference_metrics_are_computed_once_per_checkpoint_pair(tmp_path, monkeypatch):
    """A second add-on on the same scenario and seed reads the references' metrics from the
    cache, the same as a fresh evaluation; a changed attack (features) evaluates again."""
    first = run(Config(method="srl", addon="none", **SMOKE))
    second = run(Config(method="ngplus", addon="and", **SMOKE))
    assert not first["timings"]["evaluate_references_cached"]
    assert second["timings"]["evaluate_references_cached"]
    for name in ("original", "retrained"):
        assert second[name]["metrics"] == first[name]["metrics"]
    cached = list((tmp_path / "cache" / "references").glob("*.json"))
    assert len(cached) == 1
    cached[0].write_text("{ truncated")  # a broken cache file is recomputed, not trusted
    again = run(Config(method="ga", addon="none", **SMOKE))
    assert not again["timings"]["evaluate_references_cached"]
    assert again["original"]["metrics"] == first["original"]["metrics"]
    other = run(Config(method="ga", addon="none", mia_features="entropy", **SMOKE))
    assert not other["timings"]["evaluate_references_cached"]
    assert "MIA_member_entropy" in other["retrained"]["metrics"]


def test_every_hash_names_the_metrics_version():
    assert hashed_fields(Config(method="srl", **SMOKE))["metrics_version"] == METRICS_VERSION


def test_eval_every_measures_the_forget_set_between_full_evaluations():
    config = Config(method="srl", addon="prob", scale="smoke", epochs=3, eval_every=2)
    assert hashed_fields(config)["eval_every"] == 2
    assert "eval_every" not in hashed_fields(dataclasses.replace(config, eval_every=1))
    record = run(config)
    first, second, third = record["epochs"]
    assert {"UA", "rUA", "FID"} <= set(first) and "RA" not in first and "MIA" not in first
    assert {"UA", "RA", "TA", "MIA", "avg_gap"} <= set(second) <= set(third)
    assert record["final"]["MIA"] == third["MIA"] and "MIA_subsets" in record["final"]
    every = run(dataclasses.replace(config, eval_every=1))  # the same run, every metric
    for mine, full in zip(record["epochs"], every["epochs"]):
        assert {k: mine[k] for k in ("UA", "rUA", "FID")} == {k: full[k]
                                                             for k in ("UA", "rUA", "FID")}
    assert without_timings(record)["final"] == without_timings(every)["final"]
