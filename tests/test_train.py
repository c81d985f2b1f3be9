"""Tests of feasible.train: the recipe, schedules, training to memorise, the checkpoint cache."""
from __future__ import annotations

import dataclasses
import re
import warnings

import pytest
import torch

from feasible.data import forget_split, load
from feasible.train import (
    TrainConfig,
    cached_train,
    checkpoint_key,
    checkpoint_path,
    learning_rate,
    original_and_retrained,
    train,
)

pytestmark = pytest.mark.filterwarnings("ignore:.*did not memorise:UserWarning")

#: A quick recipe for the digits (1213 training images): a few seconds with the MLP.
QUICK = TrainConfig("mlp", epochs=30, lr=0.1, batch_size=64, augment=False)


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FEASIBLE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def digits():
    return load("digits")


@pytest.mark.parametrize("field, value, words", [
    ("model", "resnet", "Unknown model 'resnet'"),
    ("width", 0, "'width' parameter of TrainConfig must be None or an int >= 1. Got 0"),
    ("epochs", 0, "'epochs'"),
    ("epochs", 2.5, "'epochs'"),
    ("lr", 0.0, "'lr'"),
    ("lr", float("nan"), "'lr'"),
    ("momentum", 1.0, "'momentum'"),
    ("weight_decay", -1e-4, "'weight_decay'"),
    ("batch_size", 0, "'batch_size'"),
    ("schedule", "linear", "Unknown schedule 'linear'"),
    ("warmup_fraction", 1.0, "'warmup_fraction'"),
    ("augment", "yes", "'augment'"),
    ("seed", -1, "'seed'"),
])
def test_train_config_rejects_bad_values(field, value, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        dataclasses.replace(QUICK, **{field: value})


def test_train_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        QUICK.lr = 1.0  # type: ignore[misc]


@pytest.mark.parametrize("schedule", ["onecycle", "cosine"])
def test_warmup_schedules_rise_then_fall_to_zero(schedule):
    cfg = TrainConfig("mlp", lr=0.2, schedule=schedule, warmup_fraction=0.2)
    lrs = [learning_rate(cfg, s, 100) for s in range(100)]
    peak = max(range(100), key=lambda s: lrs[s])
    assert peak == 19 and lrs[peak] == pytest.approx(0.2)
    assert all(a <= b for a, b in zip(lrs[:peak], lrs[1:peak + 1]))
    assert all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1:]))
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12) and min(lrs) >= 0


def test_multistep_is_salun_schedule_and_constant_is_flat():
    cfg = TrainConfig("mlp", lr=0.1, schedule="multistep")
    lrs = [learning_rate(cfg, s, 182) for s in range(182)]  # one step per epoch: 182 epochs
    assert lrs[90] == pytest.approx(0.1) and lrs[91] == pytest.approx(0.01)
    assert lrs[136] == pytest.approx(0.001)
    flat = dataclasses.replace(cfg, schedule="constant")
    assert {learning_rate(flat, s, 10) for s in range(10)} == {0.1}


def test_train_memorises_and_reports(digits):
    model, info = train(digits, torch.arange(len(digits.x_train)), QUICK)
    assert info["train_accuracy"] >= 99.0 and info["memorised"]
    assert info["test_accuracy"] > 85.0
    assert info["n_train"] == len(digits.x_train) and info["epochs"] == QUICK.epochs
    assert info["time_s"] > 0 and info["final_loss"] < 0.1
    assert not model.training


def test_train_is_seeded(digits):
    cfg = dataclasses.replace(QUICK, epochs=2)
    idx = torch.arange(200)
    a, _ = train(digits, idx, cfg)
    b, _ = train(digits, idx, cfg)
    c, _ = train(digits, idx, dataclasses.replace(cfg, seed=1))
    for (name, pa), pb, pc in zip(a.state_dict().items(), b.state_dict().values(),
                                  c.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.state_dict().values(),
                                                         c.state_dict().values()))


def test_train_rejects_bad_indices(digits):
    with pytest.raises(ValueError, match="'idx' parameter of train"):
        train(digits, torch.tensor([], dtype=torch.int64), QUICK)
    with pytest.raises(ValueError, match="'idx' parameter of train"):
        train(digits, torch.tensor([0, len(digits.x_train)]), QUICK)


def test_checkpoint_key_covers_recipe_data_and_indices(digits):
    idx = torch.arange(100)
    key = checkpoint_key(digits, idx, QUICK)
    assert key == checkpoint_key(digits, idx.clone(), QUICK)
    assert key != checkpoint_key(digits, torch.arange(101), QUICK)
    assert key != checkpoint_key(digits, idx, dataclasses.replace(QUICK, seed=1))
    assert key != checkpoint_key(digits, idx, dataclasses.replace(QUICK, lr=0.05))
    other = load("digits", seed=1)  # another validation split: another training set
    assert key != checkpoint_key(other, idx, QUICK)


def _same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_checkpoint_cache_hit_and_rejections(digits):
    cfg = dataclasses.replace(QUICK, epochs=3)
    idx = torch.arange(300)
    first, info = cached_train(digits, idx, cfg)
    path = checkpoint_path(info["key"])
    assert not info["cached"] and path.exists()
    blob = torch.load(path, weights_only=True)
    assert blob["key"] == info["key"]

    again, info2 = cached_train(digits, idx, cfg)  # a hit: same weights, same info
    assert info2["cached"] and _same_weights(first, again)
    assert info2["train_accuracy"] == info["train_accuracy"]

    path.write_bytes(b"not a checkpoint")  # corrupted: retrained with a warning, overwritten
    with pytest.warns(UserWarning, match="unreadable"):
        model, info3 = cached_train(digits, idx, cfg)
    assert not info3["cached"] and _same_weights(first, model)
    assert torch.load(path, weights_only=True)["key"] == info["key"]

    blob["key"] = "0" * 24  # another hash stored under this name
    torch.save(blob, path)
    with pytest.warns(UserWarning, match="has hash"):
        _, info4 = cached_train(digits, idx, cfg)
    assert not info4["cached"]

    narrow, _ = train(digits, idx, dataclasses.replace(cfg, width=16))  # right hash, wrong shapes
    torch.save({"key": info["key"], "state_dict": narrow.state_dict(), "info": {}}, path)
    with pytest.warns(UserWarning, match="does not match the model"):
        _, info5 = cached_train(digits, idx, cfg)
    assert not info5["cached"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cached_train(digits, idx, cfg)[1]["cached"]


def test_original_and_retrained(digits):
    split = forget_split(digits, "random", fraction=0.1, seed=0)
    cfg = dataclasses.replace(QUICK, epochs=3)
    original, retrained, info = original_and_retrained(digits, split, cfg)
    assert info["original"]["n_train"] == len(digits.x_train)
    assert info["retrained"]["n_train"] == len(split.retain_idx)
    assert info["original"]["key"] != info["retrained"]["key"]
    assert not _same_weights(original, retrained)
    _, _, info2 = original_and_retrained(digits, split, cfg)
    assert info2["original"]["cached"] and info2["retrained"]["cached"]


def test_checkpoint_check_rejects_other_weights_and_tolerates_rounding(digits):
    cfg = dataclasses.replace(QUICK, epochs=3)
    idx = torch.arange(300)
    first, info = cached_train(digits, idx, cfg)
    path = checkpoint_path(info["key"])
    blob = torch.load(path, weights_only=True)
    check = blob["check"]  # logits on 64 training samples spread over the indices
    assert check["indices"].shape == (64,) and check["logits"].shape == (64, 10)
    assert set(check["indices"].tolist()) <= set(idx.tolist())
    assert check["indices"][0] == 0 and check["indices"][-1] == 299

    torch.manual_seed(0)  # another machine's rounding: tiny changes to every weight pass
    rounded = {k: v + 1e-6 * torch.randn_like(v) if v.is_floating_point() else v
               for k, v in blob["state_dict"].items()}
    torch.save({**blob, "state_dict": rounded}, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cached_train(digits, idx, cfg)[1]["cached"]

    other, _ = train(digits, idx, dataclasses.replace(cfg, seed=1))  # right hash and shapes
    torch.save({**blob, "state_dict": other.state_dict()}, path)
    with pytest.warns(UserWarning, match=re.escape(f"Checkpoint {path} fails its check: its "
                                                   f"predictions on 64 training samples differ")):
        model, info2 = cached_train(digits, idx, cfg)
    assert not info2["cached"] and _same_weights(first, model)
    assert torch.equal(torch.load(path, weights_only=True)["check"]["logits"], check["logits"])

    bad = {"indices": torch.tensor([10 ** 6]), "logits": torch.zeros(1, 10)}
    torch.save({**blob, "check": bad}, path)
    with pytest.warns(UserWarning, match="fails its check: its stored check is unusable"):
        assert not cached_train(digits, idx, cfg)[1]["cached"]

    # a checkpoint from before the check: trusted on its hash and shapes, as it was then
    torch.save({k: v for k, v in blob.items() if k != "check"}, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cached_train(digits, idx, cfg)[1]["cached"]


def test_a_checkpoint_that_cannot_be_written_is_a_warning(digits, tmp_path):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "checkpoints").write_text("a file where the folder goes")
    cfg = dataclasses.replace(QUICK, epochs=1)
    with pytest.warns(UserWarning, match="Could not write the checkpoint .* the model is used"):
        model, info = cached_train(digits, torch.arange(100), cfg)
    assert not info["cached"] and not model.training
