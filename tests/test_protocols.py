"""Protocols end to end: the committed records keep their hashes; the authors' protocol runs
from the command line with every add-on and its records say so; the authors' metrics."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from feasible.__main__ import main
from feasible.experiment import METRICS_VERSION, Config, config_hash, run
from feasible.masks import ADDONS
from feasible.metrics import MIA_FEATURES
from feasible.paths import ROOT
from feasible.unlearn import PROTOCOLS

RECORDS = sorted((ROOT / "results" / "cpu").glob("*.json"))


@pytest.mark.parametrize("path", RECORDS, ids=[p.stem for p in RECORDS])
def test_committed_records_keep_their_hashes(path):
    """New fields at their defaults leave the hash of every committed configuration as it was,
    and every committed record measures what this version measures."""
    record = json.loads(path.read_text())
    config = Config.from_dict(record["config"])
    assert config_hash(config) == record["hash"] == path.stem
    assert record["metrics_version"] == METRICS_VERSION
    assert record["protocol"] == config.protocol in PROTOCOLS


def test_records_exist():
    assert RECORDS, "results/cpu holds the committed records"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """One cache (the smoke models train once) and one results folder for the module."""
    root = tmp_path_factory.mktemp("protocols")
    return {"FEASIBLE_CACHE": str(root / "cache"), "FEASIBLE_RESULTS": str(root / "results")}


@pytest.fixture
def env(folders, monkeypatch):
    for name, value in folders.items():
        monkeypatch.setenv(name, value)
    return folders


def _records(env) -> dict[str, dict]:
    out = {}
    for path in Path(env["FEASIBLE_RESULTS"]).glob("smoke/*.json"):
        record = json.loads(path.read_text())
        out[record["hash"]] = record
    return out


@pytest.mark.parametrize("addon", list(ADDONS))
def test_the_authors_protocol_runs_from_the_command_line(env, addon, capsys):
    before = set(_records(env))
    argv = ["run", "--scale", "smoke", "--protocol", "authors", "--method", "srl",
            "--addon", addon, "--epochs", "2"]
    assert main(argv) == 0
    assert "unlearned" in capsys.readouterr().out
    (new,) = [r for h, r in _records(env).items() if h not in before]
    config = new["config"]
    assert new["protocol"] == config["protocol"] == "authors"
    assert (config["optimizer"], config["noise"], config["mask_mode"]) == ("adam", "ema", "leaky")
    assert (config["lr"], config["batch_size"], config["p"], config["epochs"]) == (
        1e-4, 256, 0.3, 2)
    assert config["addon"] == addon and new["diverged_epoch"] is None
    for metrics in (new["final"], new["epochs"][-1]):
        assert {"UA", "RA", "TA", "MIA", "rUA", "FID", "ua_ratio", "MIA_member_confidence",
                "MIA_efficacy_confidence"} <= set(metrics)
    assert new["retrained"]["metrics"]["rUA"] == 0.0
    assert new["retrained"]["metrics"]["FID"] == 100.0
    final = new["final"]
    assert final["rUA"] == pytest.approx(new["retrained"]["metrics"]["UA"] - final["UA"])


def test_the_harness_stays_the_default_and_all_five_attacks_are_opt_in(env):
    config = Config(method="srl_authors", scale="smoke", epochs=1, mia_features="all")
    assert config.protocol == "harness" and config.optimizer == "sgd"
    record = run(config)
    assert record["protocol"] == "harness"
    for name in MIA_FEATURES:
        member, efficacy = (record["final"][f"MIA_{kind}_{name}"]
                            for kind in ("member", "efficacy"))
        assert member + efficacy == pytest.approx(100.0)
    assert record["final"]["MIA"] == record["final"]["MIA_efficacy_confidence"]
    plain = Config(method="srl_authors", scale="smoke", epochs=1)
    assert config_hash(plain) != config_hash(config)
    with pytest.raises(ValueError, match="'mia_features'"):
        Config(method="srl", scale="smoke", mia_features="loss")
