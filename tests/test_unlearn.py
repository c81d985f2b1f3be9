"""Tests for feasible.unlearn: the one loop, the masked optimiser, the configuration."""
from __future__ import annotations

import copy
import math
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from feasible import data, models
from feasible.masks import ADDONS
from feasible.methods import METHODS
from feasible.metrics import evaluate
from feasible.unlearn import (
    MomentumState,
    UnlearnConfig,
    masked_sgd_step,
    relevant_fields,
    saliency_at,
    unlearn,
)


@pytest.fixture(scope="module")
def digits():
    """A memorising MLP on scikit-learn's digits and a random 10% forget set (about 1 s)."""
    ds = data.load("digits", seed=0)
    split = data.forget_split(ds, "random", fraction=0.1, seed=0)
    torch.manual_seed(0)
    net = models.build_model("mlp", in_channels=ds.channels, num_classes=ds.num_classes,
                             image_size=ds.image_size, mean=ds.mean, std=ds.std, width=32)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    x, y = ds.x_train, ds.y_train
    for _ in range(15):
        for idx in data.batches(len(y), 64, gen):
            opt.zero_grad()
            F.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    return {
        "model": net,
        "forget": (x[split.forget_idx], y[split.forget_idx]),
        "retain": (x[split.retain_idx], y[split.retain_idx]),
        "test": (ds.x_test, ds.y_test),
        "num_classes": ds.num_classes,
    }


def run(digits, cfg, **kwargs):
    model = copy.deepcopy(digits["model"])
    result = unlearn(model, digits["forget"], digits["retain"], cfg,
                     num_classes=digits["num_classes"], **kwargs)
    return model, result


def flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


# --- the smoke test: every base method with every add-on -----------------------------------------

@pytest.mark.parametrize("addon", list(ADDONS))
@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_with_every_addon(digits, method, addon):
    cfg = UnlearnConfig(method, addon=addon, epochs=1, batch_size=64, k=4)
    model, result = run(digits, cfg)
    assert result.diverged_epoch is None
    assert torch.isfinite(flat(model)).all()
    (record,) = result.epochs
    assert record["epoch"] == 1 and record["steps"] > 0 and not record["diverged"]
    assert math.isfinite(record["step_norm"]) and record["step_norm"] > 0
    assert 0 < record["kept_fraction"] <= 1 and 0 < record["kept_fraction_active"] <= 1
    if addon == "none":
        assert record["kept_fraction"] == 1.0
        assert record["direction_ratio"] == pytest.approx(1.0)
    if addon in ("and", "prob"):
        assert record["kept_fraction"] < 1.0
        assert record["direction_ratio"] < 1.0
    if addon == "salun":
        assert record["kept_fraction"] == pytest.approx(0.5, abs=1e-4)
    assert not torch.equal(flat(model), flat(digits["model"]))
    metrics = evaluate(model, forget=digits["forget"], retain=digits["retain"],
                       test=digits["test"])
    assert all(math.isfinite(v) for v in metrics.values())


# --- the masked optimiser ------------------------------------------------------------------------

def _tiny_params(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {"w": nn.Parameter(torch.randn(3, 4, generator=gen)),
            "b": nn.Parameter(torch.randn(4, generator=gen))}


def test_all_false_keep_moves_nothing_and_keeps_momentum():
    params = _tiny_params()
    before = {n: p.detach().clone() for n, p in params.items()}
    buffers = {n: torch.randn_like(p) for n, p in params.items()}
    direction = {n: torch.randn_like(p) for n, p in params.items()}
    keep = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in params.items()}
    step, state = masked_sgd_step(params, direction, keep, MomentumState(dict(buffers)), lr=0.5,
                                  momentum=0.9, weight_decay=0.1)
    for n in params:
        assert torch.equal(params[n].detach(), before[n])
        assert torch.equal(state.buffers[n], buffers[n])
        assert torch.equal(step[n], torch.zeros_like(step[n]))


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_masked_step_matches_torch_sgd_on_kept_coordinates_only(momentum):
    lr, wd = 0.1, 0.05
    ours, ref = _tiny_params(), _tiny_params()
    opt = torch.optim.SGD(list(ref.values()), lr=lr, momentum=momentum, weight_decay=wd)
    gen = torch.Generator().manual_seed(1)
    keep = {n: torch.rand(p.shape, generator=gen) < 0.5 for n, p in ours.items()}
    start = {n: p.detach().clone() for n, p in ours.items()}
    state = MomentumState(None)
    for _ in range(3):
        direction = {n: torch.randn(p.shape, generator=gen) for n, p in ours.items()}
        _, state = masked_sgd_step(ours, direction, keep, state, lr=lr, momentum=momentum,
                                   weight_decay=wd)
        for n, p in ref.items():  # the reference: torch SGD on the masked gradient (SalUn leak)
            p.grad = direction[n] * keep[n]
        opt.step()
    for n in ours:
        assert torch.equal(ours[n].detach()[~keep[n]], start[n][~keep[n]])
        if momentum:
            assert torch.equal(state.buffers[n][~keep[n]], torch.zeros_like(start[n])[~keep[n]])
        assert torch.allclose(ours[n].detach()[keep[n]], ref[n].detach()[keep[n]], atol=1e-6)
        # torch's SGD lets weight decay and momentum move the masked coordinates: ours does not
        assert not torch.equal(ref[n].detach()[~keep[n]], start[n][~keep[n]])


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_salun_mask_freezes_coordinates_through_momentum_and_weight_decay(digits, momentum):
    cfg = UnlearnConfig("rl", addon="salun", epochs=2, batch_size=64, momentum=momentum,
                        weight_decay=5e-4)
    original = digits["model"]
    saliency = saliency_at(copy.deepcopy(original), digits["forget"], fraction=0.5)
    model, result = run(digits, cfg)
    assert result.diverged_epoch is None
    moved = 0
    for (name, before), after in zip(original.named_parameters(), model.parameters()):
        frozen = ~saliency[name]
        assert torch.equal(after.detach()[frozen], before.detach()[frozen]), name
        moved += int((after.detach() != before.detach())[saliency[name]].sum())
    assert moved > 0


def test_saliency_keeps_the_top_fraction_of_the_forget_gradient(digits):
    model = copy.deepcopy(digits["model"])
    model.train()
    mask = saliency_at(model, digits["forget"], fraction=0.25)
    assert model.training  # mode restored
    total = sum(m.numel() for m in mask.values())
    assert sum(int(m.sum()) for m in mask.values()) == round(0.25 * total)
    x, y = digits["forget"]
    model.eval()
    grads = torch.autograd.grad(-F.cross_entropy(model(x), y, reduction="sum"),
                                list(model.parameters()))
    magnitude = {n: g.abs() for (n, _), g in zip(model.named_parameters(), grads)}
    kept_min = min(magnitude[n][mask[n]].min() for n in mask if mask[n].any())
    dropped_max = max(magnitude[n][~mask[n]].max() for n in mask if (~mask[n]).any())
    assert kept_min >= dropped_max * (1 - 1e-5)


# --- determinism, divergence, records ----------------------------------------------------------

def test_same_seed_gives_identical_parameters(digits):
    cfg = UnlearnConfig("rl", addon="prob", epochs=1, batch_size=64, k=4, momentum=0.5, seed=3)
    a, _ = run(digits, cfg)
    b, _ = run(digits, cfg)
    c, _ = run(digits, UnlearnConfig("rl", addon="prob", epochs=1, batch_size=64, k=4,
                                     momentum=0.5, seed=4))
    assert torch.equal(flat(a), flat(b))
    assert not torch.equal(flat(a), flat(c))


def test_augmentation_is_seeded(digits):
    cfg = UnlearnConfig("srl", epochs=1, batch_size=64, seed=1)
    a, _ = run(digits, cfg, augment_policy="crop_flip")
    b, _ = run(digits, cfg, augment_policy="crop_flip")
    c, _ = run(digits, cfg)
    assert torch.equal(flat(a), flat(b))
    assert not torch.equal(flat(a), flat(c))


def test_divergence_is_a_result_not_an_exception(digits):
    seen = []

    def on_epoch(epoch, model):
        seen.append(epoch)
        return evaluate(model, forget=digits["forget"], retain=digits["retain"],
                        test=digits["test"])

    cfg = UnlearnConfig("ga", lr=1e30, epochs=3, batch_size=64)
    _, result = run(digits, cfg, on_epoch=on_epoch)
    assert result.diverged_epoch == 1
    assert len(result.epochs) == 1 and seen == [1]
    record = result.epochs[0]
    assert record["diverged"] is True
    assert math.isnan(record["MIA"])


def test_on_epoch_is_merged_and_not_timed(digits):
    def on_epoch(epoch, model):
        model.eval()  # the loop puts the model back in train mode
        time.sleep(0.5)
        return {"probe": epoch * 10}

    model, result = run(digits, UnlearnConfig("ft", epochs=2, batch_size=128), on_epoch=on_epoch)
    assert [r["probe"] for r in result.epochs] == [10, 20]
    assert [r["epoch"] for r in result.epochs] == [1, 2]
    assert result.wall_time < 1.0  # the two sleeps alone take 1 s
    assert result.wall_time == pytest.approx(sum(r["wall_time"] for r in result.epochs)
                                             + result.setup_time)
    assert model.training


def test_unneeded_gradients_are_skipped_and_needed_ones_computed(digits):
    _, ga = run(digits, UnlearnConfig("ga", epochs=1, batch_size=64))
    _, ga_and = run(digits, UnlearnConfig("ga", addon="and", epochs=1, batch_size=64))
    _, ft = run(digits, UnlearnConfig("ft", epochs=1, batch_size=64))
    assert ga.epochs[0]["loss_c"] is None and ga.epochs[0]["loss_u"] < 0
    assert ga_and.epochs[0]["loss_c"] > 0 and ga_and.epochs[0]["loss_u"] < 0
    assert ft.epochs[0]["loss_u"] is None and ft.epochs[0]["loss_c"] > 0


def test_steps_per_epoch_follow_the_batching(digits):
    n_f, n_r = len(digits["forget"][1]), len(digits["retain"][1])

    def batches(n, size):  # a tail smaller than 2 joins the batch before it
        full, tail = divmod(n, size)
        return full + (tail >= 2) if full else 1

    steps = {m: run(digits, UnlearnConfig(m, epochs=1, batch_size=64))[1].epochs[0]["steps"]
             for m in ("ft", "ga", "ngplus", "rl")}
    assert steps["ft"] == steps["ngplus"] == batches(n_r, 64)
    assert steps["ga"] == batches(n_f, 64)
    assert steps["rl"] == batches(n_f, 64) + batches(n_r, 64)


def test_l1_weight_decays_linearly(digits):
    _, result = run(digits, UnlearnConfig("l1_sparse", epochs=4, batch_size=256, l1_gamma=1e-3))
    assert [r["l1_weight"] for r in result.epochs] == pytest.approx([1e-3, 7.5e-4, 5e-4, 2.5e-4])


def test_renorm_restores_the_unmasked_norm(digits):
    _, result = run(digits, UnlearnConfig("ngplus", addon="and", renorm=True, epochs=1,
                                          batch_size=64))
    assert result.epochs[0]["direction_ratio"] == pytest.approx(1.0, rel=1e-4)


def test_prob_with_per_sample_noise(digits):
    _, result = run(digits, UnlearnConfig("srl", addon="focus", noise="per_sample", epochs=1,
                                          batch_size=64))
    assert result.diverged_epoch is None and 0 < result.epochs[0]["kept_fraction"] <= 1


# --- configuration -------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, needle", [
    ({"method": "fft"}, "Unknown method 'fft'"),
    ({"addon": "porb"}, "Unknown add-on 'porb'"),
    ({"agg": "max"}, "Unknown aggregator 'max'"),
    ({"focus_variant": "hard"}, "Unknown focus variant 'hard'"),
    ({"noise": "bootstrap"}, "Unknown noise estimator 'bootstrap'"),
    ({"p": 1.5}, "'p' field of UnlearnConfig must be a float in the open interval (0, 1). "
                 "Got 1.5"),
    ({"alpha": -1.0}, "'alpha'"),
    ({"beta": float("nan")}, "'beta'"),
    ({"lr": 0.0}, "'lr'"),
    ({"epochs": 0}, "'epochs' field of UnlearnConfig must be an int >= 1. Got 0"),
    ({"epochs": 2.0}, "'epochs'"),
    ({"batch_size": 1}, "'batch_size'"),
    ({"momentum": 1.0}, "'momentum'"),
    ({"weight_decay": -1e-4}, "'weight_decay'"),
    ({"k": 1}, "'k'"),
    ({"k": 300}, "batch_size=128"),
    ({"saliency_fraction": 0.0}, "'saliency_fraction'"),
    ({"ngplus_a": 1.5}, "'ngplus_a'"),
    ({"l1_gamma": -1.0}, "'l1_gamma'"),
    ({"seed": -1}, "'seed'"),
    ({"seed": True}, "'seed'"),
    ({"renorm": 1}, "'renorm'"),
    ({"method": "ft", "beta": 0.0}, "both 0"),
])
def test_config_validation(kwargs, needle):
    kwargs = {"method": "ngplus", **kwargs}
    with pytest.raises(ValueError) as info:
        UnlearnConfig(**kwargs)
    assert needle in str(info.value)


def test_config_weights_and_learning_rate():
    assert UnlearnConfig("ngplus").weights == pytest.approx((0.05, 0.95))
    assert UnlearnConfig("ngplus", ngplus_a=0.8).weights == pytest.approx((0.2, 0.8))
    assert UnlearnConfig("ngplus", alpha=0.5).weights == pytest.approx((0.5, 0.95))
    assert UnlearnConfig("ft").weights == (0.0, 1.0)
    assert UnlearnConfig("srl").learning_rate == METHODS["srl"].lr
    assert UnlearnConfig("srl", lr=0.2).learning_rate == 0.2


def test_relevant_fields_drop_what_the_run_does_not_read():
    none = relevant_fields(UnlearnConfig("srl"))
    assert "p" not in none and "k" not in none and "ngplus_a" not in none
    assert "l1_gamma" not in none and "saliency_fraction" not in none
    assert relevant_fields(UnlearnConfig("srl", p=0.3)) == none
    prob = relevant_fields(UnlearnConfig("srl", addon="prob"))
    assert {"p", "k", "noise"} <= set(prob)
    assert "k" not in relevant_fields(UnlearnConfig("srl", addon="prob", noise="per_sample"))
    assert "p" not in relevant_fields(UnlearnConfig("srl", addon="focus"))
    assert "p" in relevant_fields(UnlearnConfig("srl", addon="focus", focus_variant="soft"))
    assert relevant_fields(UnlearnConfig("ngplus", ngplus_a=0.9))["beta"] == pytest.approx(0.9)
    assert "l1_gamma" in relevant_fields(UnlearnConfig("l1_sparse"))


def test_unlearn_rejects_bad_arguments(digits):
    model = copy.deepcopy(digits["model"])
    x, y = digits["forget"]
    with pytest.raises(ValueError, match="'forget'"):
        unlearn(model, (x[:0], y[:0]), digits["retain"], UnlearnConfig("ga"), num_classes=10)
    with pytest.raises(ValueError, match="'forget'"):
        unlearn(model, (x[:1], y[:1]), digits["retain"], UnlearnConfig("ga", addon="prob"),
                num_classes=10)
    with pytest.raises(ValueError, match="'num_classes'"):
        unlearn(model, digits["forget"], digits["retain"], UnlearnConfig("ga"), num_classes=1)
    with pytest.raises(TypeError, match="'cfg'"):
        unlearn(model, digits["forget"], digits["retain"], {"method": "ga"}, num_classes=10)
