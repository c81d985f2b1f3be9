"""Tests for feasible.unlearn: the one loop, the masked optimiser, the configuration."""
from __future__ import annotations

import copy
import dataclasses
import math
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from feasible import data, models
from feasible.masks import ADDONS, Addon
from feasible.methods import METHODS
from feasible.metrics import evaluate
from feasible.unlearn import (
    PROTOCOLS,
    AdamState,
    MomentumState,
    UnlearnConfig,
    masked_adam_step,
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

# Every method with "none" and "prob" (both gradients and a noise model); every add-on with a
# paired method, the sequential one and the mixed one (whose two paths, one pass or two, differ).
PAIRS = sorted({(m, a) for m in METHODS for a in ("none", "prob")
                if METHODS[m].addons is None or a in METHODS[m].addons}  # the add-ons it takes
               | {(m, a) for m in ("ngplus", "rl", "srl_deepunlearn") for a in ADDONS})


@pytest.mark.parametrize("method, addon", PAIRS)
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
    if addon == "salun_step":  # per tensor, ties at the quantile kept
        assert 0.5 <= record["kept_fraction"] < 0.6
    assert record["masked_moved_fraction"] in (None, 0.0)  # hard masks by default
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
def test_leaky_sgd_is_torch_sgd_on_the_masked_gradient(momentum):
    lr, wd = 0.1, 0.05
    ours, ref = _tiny_params(), _tiny_params()
    opt = torch.optim.SGD(list(ref.values()), lr=lr, momentum=momentum, weight_decay=wd)
    gen = torch.Generator().manual_seed(1)
    state = MomentumState(None)
    for _ in range(4):
        keep = {n: torch.rand(p.shape, generator=gen) < 0.5 for n, p in ours.items()}
        direction = {n: torch.randn(p.shape, generator=gen) * keep[n] for n, p in ours.items()}
        _, state = masked_sgd_step(ours, direction, keep, state, lr=lr, momentum=momentum,
                                   weight_decay=wd, leaky=True)
        for n, p in ref.items():
            p.grad = direction[n].clone()
        opt.step()
    for n in ours:
        torch.testing.assert_close(ours[n].detach(), ref[n].detach())


@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_leaky_adam_is_torch_adam_on_the_masked_gradient(wd):
    """The authors' optimiser: torch.optim.Adam after the mask zeroed param.grad."""
    lr = 1e-2
    ours, ref = _tiny_params(), _tiny_params()
    opt = torch.optim.Adam(list(ref.values()), lr=lr, weight_decay=wd)
    gen = torch.Generator().manual_seed(2)
    state = AdamState(None, None, None)
    for _ in range(6):
        keep = {n: torch.rand(p.shape, generator=gen) < 0.6 for n, p in ours.items()}
        direction = {n: torch.randn(p.shape, generator=gen) * keep[n] for n, p in ours.items()}
        _, state = masked_adam_step(ours, direction, keep, state, lr=lr, weight_decay=wd,
                                    leaky=True)
        for n, p in ref.items():
            p.grad = direction[n].clone()
        opt.step()
    for n in ours:
        torch.testing.assert_close(ours[n].detach(), ref[n].detach(), rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(state.exp_avg[n], opt.state[ref[n]]["exp_avg"])
        torch.testing.assert_close(state.exp_avg_sq[n], opt.state[ref[n]]["exp_avg_sq"])


def _one_coordinate_history(optimizer, leaky, **kwargs):
    """Steps on one scalar: kept with gradient 1, masked (gradient 0), then kept with 1 again."""
    theta = {"w": nn.Parameter(torch.tensor([1.0, 1.0]))}
    gradients = [torch.tensor([1.0, 1.0]), torch.tensor([0.0, 1.0]), torch.tensor([1.0, 1.0])]
    masks = [torch.tensor([True, True]), torch.tensor([False, True]), torch.tensor([True, True])]
    step_fn = masked_adam_step if optimizer == "adam" else masked_sgd_step
    state = AdamState(None, None, None) if optimizer == "adam" else MomentumState(None)
    values = []
    for g, keep in zip(gradients, masks):
        _, state = step_fn(theta, {"w": g * keep}, {"w": keep}, state, lr=0.1, leaky=leaky,
                           **kwargs)
        values.append(theta["w"].detach().clone())
    return values, state


@pytest.mark.parametrize("optimizer, kwargs", [("adam", {}), ("sgd", {"momentum": 0.9}),
                                               ("sgd", {"weight_decay": 0.1})])
def test_hard_masks_hold_a_coordinate_leaky_masks_let_the_optimiser_move_it(optimizer, kwargs):
    hard, hard_state = _one_coordinate_history(optimizer, leaky=False, **kwargs)
    leaky, _ = _one_coordinate_history(optimizer, leaky=True, **kwargs)
    # step 2 masks coordinate 0: a hard mask holds it, a leaky one lets momentum, Adam's first
    # moment or weight decay move it although its gradient is 0
    assert hard[1][0] == hard[0][0]
    assert leaky[1][0] != leaky[0][0]
    # coordinate 1 is never masked: both modes agree on it
    assert torch.equal(torch.stack(hard)[:, 1], torch.stack(leaky)[:, 1])
    if optimizer == "adam":  # the held coordinate resumes as if step 2 had not happened
        assert hard_state.steps["w"].tolist() == [2, 3]
        fresh = {"w": nn.Parameter(hard[0][:1].clone())}
        first = {"w": nn.Parameter(torch.tensor([1.0]))}
        _, s1 = masked_adam_step(first, {"w": torch.tensor([1.0])}, {"w": torch.tensor([True])},
                                 AdamState(None, None, None), lr=0.1)
        masked_adam_step(fresh, {"w": torch.tensor([1.0])}, {"w": torch.tensor([True])}, s1,
                         lr=0.1)
        torch.testing.assert_close(hard[2][:1], fresh["w"].detach())


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_the_loop_leaks_only_under_leaky_masks(digits, optimizer):
    """Per-step masks (AND) change from step to step: a leaky mask lets state move them."""
    kwargs = dict(addon="and", epochs=1, batch_size=64, optimizer=optimizer,
                  lr=1e-3 if optimizer == "adam" else 0.1,
                  momentum=0.0 if optimizer == "adam" else 0.9)
    _, hard = run(digits, UnlearnConfig("ngplus", mask_mode="hard", **kwargs))
    _, leaky = run(digits, UnlearnConfig("ngplus", mask_mode="leaky", **kwargs))
    assert hard.epochs[0]["masked_moved_fraction"] == 0.0
    assert leaky.epochs[0]["masked_moved_fraction"] > 0.05
    assert hard.epochs[0]["kept_fraction"] < 1.0


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


def test_on_epoch_is_merged_and_not_timed(digits, monkeypatch):
    # the loop's clock, advanced by an hour inside each on_epoch call: a time measured across
    # the call would hold that hour, whatever this machine's speed
    clock = [0.0]
    real = time.perf_counter
    monkeypatch.setattr(time, "perf_counter", lambda: real() + clock[0])

    def on_epoch(epoch, model):
        model.eval()  # the loop puts the model back in train mode
        clock[0] += 3600.0
        return {"probe": epoch * 10}

    model, result = run(digits, UnlearnConfig("ft", epochs=2, batch_size=128), on_epoch=on_epoch)
    assert [r["probe"] for r in result.epochs] == [10, 20]
    assert [r["epoch"] for r in result.epochs] == [1, 2]
    assert clock[0] == 7200.0 and result.wall_time < 3600.0
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
    ({"addon": "prob", "k": 300}, "batch_size=128"),
    ({"saliency_fraction": 0.0}, "'saliency_fraction'"),
    ({"ngplus_a": 1.5}, "'ngplus_a'"),
    ({"l1_gamma": -1.0}, "'l1_gamma'"),
    ({"seed": -1}, "'seed'"),
    ({"seed": True}, "'seed'"),
    ({"renorm": 1}, "'renorm'"),
    ({"method": "ft", "beta": 0.0}, "both 0"),
    ({"protocol": "paper"}, "Unknown protocol 'paper'"),
    ({"optimizer": "lbfgs"}, "Unknown optimizer 'lbfgs'"),
    ({"mask_mode": "soft"}, "Unknown mask mode 'soft'"),
    ({"optimizer": "adam", "momentum": 0.9}, "'momentum' field of UnlearnConfig must be 0 with"),
    ({"protocol": "authors", "momentum": 0.9}, "optimizer 'adam'"),
    ({"protocol": "authors", "addon": "focus", "noise": "microbatch", "k": 300},
     "batch_size=256"),
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


def test_protocols_are_presets_and_explicit_fields_win():
    defaults = {f.name: f.default for f in dataclasses.fields(UnlearnConfig)}
    for preset in PROTOCOLS.values():  # a preset only sets fields left None
        assert set(preset) <= {name for name, value in defaults.items() if value is None}
        assert set(preset) == set(PROTOCOLS["harness"])
    harness = UnlearnConfig("srl")
    assert (harness.protocol, harness.optimizer, harness.mask_mode, harness.noise) == (
        "harness", "sgd", "hard", "microbatch")
    assert (harness.epochs, harness.batch_size, harness.p, harness.lr) == (5, 128, 0.45, None)
    assert harness.learning_rate == METHODS["srl"].lr
    authors = UnlearnConfig("srl_authors", addon="prob", protocol="authors")
    assert (authors.optimizer, authors.mask_mode, authors.noise) == ("adam", "leaky", "ema")
    assert (authors.epochs, authors.batch_size, authors.p) == (30, 256, 0.3)
    assert authors.learning_rate == 1e-4 and authors.weights == pytest.approx((0.05, 0.95))
    mixed = UnlearnConfig("srl", protocol="authors", optimizer="sgd", epochs=2, p=0.5, lr=0.01)
    assert (mixed.optimizer, mixed.epochs, mixed.p, mixed.learning_rate) == ("sgd", 2, 0.5, 0.01)
    assert (mixed.mask_mode, mixed.noise, mixed.batch_size) == ("leaky", "ema", 256)
    # the resolved object rebuilds itself, under either protocol name
    assert UnlearnConfig(**dataclasses.asdict(authors)) == authors


def test_relevant_fields_keep_the_harness_hashes_and_name_what_changes():
    before = {"method", "addon", "agg", "alpha", "beta", "renorm", "lr", "epochs", "batch_size",
              "momentum", "weight_decay", "seed"}  # what a harness run without add-on hashed
    assert set(relevant_fields(UnlearnConfig("srl"))) == before
    explicit = UnlearnConfig("srl", addon="prob", protocol="harness", optimizer="sgd",
                             mask_mode="hard", noise="microbatch", epochs=5, batch_size=128)
    assert relevant_fields(explicit) == relevant_fields(UnlearnConfig("srl", addon="prob"))
    assert "mask_mode" not in relevant_fields(UnlearnConfig("srl", mask_mode="leaky"))
    authors = relevant_fields(UnlearnConfig("srl_authors", addon="prob", protocol="authors"))
    assert authors["optimizer"] == "adam" and authors["mask_mode"] == "leaky"
    assert authors["noise"] == "ema" and "k" not in authors and "protocol" not in authors
    same = UnlearnConfig("srl_authors", addon="prob", optimizer="adam", lr=1e-4,
                         mask_mode="leaky", noise="ema", epochs=30, batch_size=256, p=0.3)
    assert relevant_fields(same) == authors  # the values count, not the protocol's name


# --- batchings -----------------------------------------------------------------------------------

class _Probe(nn.Module):
    """A linear model on 1-D inputs that records every input it sees (the sample ids)."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(1, 3)
        self.seen = []

    def forward(self, x):
        self.seen.append(x[:, 0].round().long().tolist())
        return self.linear(x / 1000.0)


def _probe_sets(n_f=8, n_r=64):
    forget = (torch.arange(n_f, dtype=torch.float32)[:, None], torch.arange(n_f) % 3)
    retain = (1000.0 + torch.arange(n_r, dtype=torch.float32)[:, None], torch.arange(n_r) % 3)
    return forget, retain


@pytest.mark.parametrize("method, partner", [("ngplus_authors", "epoch"), ("ngplus", "cycle")])
def test_partner_streams(method, partner):
    """The authors' retain stream restarts every epoch; this project's runs on across epochs."""
    forget, retain = _probe_sets()
    model = _Probe()
    cfg = UnlearnConfig(method, epochs=4, batch_size=4, lr=1e-3)
    result = unlearn(model, forget, retain, cfg, num_classes=3)
    batches = [ids for ids in model.seen]
    if partner == "epoch":  # an epoch over D_f (2 batches), each step with one D_r batch
        assert [r["steps"] for r in result.epochs] == [2] * 4
        retain_ids = [i for ids in batches for i in ids if i >= 1000]
        assert len(retain_ids) == 4 * 2 * 4
        epochs = [retain_ids[8 * e:8 * e + 8] for e in range(4)]
        assert all(len(set(e)) == 8 for e in epochs)  # within an epoch: one shuffled pass
        assert len(set(retain_ids)) < len(retain_ids)  # across epochs: fresh passes repeat
    else:  # an epoch over D_r (16 batches), D_f cycled alongside
        assert [r["steps"] for r in result.epochs] == [16] * 4
        forget_ids = [i for ids in batches for i in ids if i < 1000]
        passes = [sorted(forget_ids[8 * j:8 * j + 8]) for j in range(len(forget_ids) // 8)]
        assert all(p == list(range(8)) for p in passes)


def test_mixed_batching_walks_the_union_once_per_epoch():
    forget, retain = _probe_sets(n_f=8, n_r=24)
    model = _Probe()
    cfg = UnlearnConfig("srl_deepunlearn", epochs=2, batch_size=8, lr=1e-3)
    result = unlearn(model, forget, retain, cfg, num_classes=3)
    assert [r["steps"] for r in result.epochs] == [4, 4]
    assert len(model.seen) == 8  # one forward pass per step
    first_epoch = sorted(i for ids in model.seen[:4] for i in ids)
    assert first_epoch == list(range(8)) + list(range(1000, 1024))
    assert any(min(ids) < 1000 <= max(ids) for ids in model.seen)  # mixed batches


def test_mixed_batching_one_pass_equals_the_weighted_parts(digits, monkeypatch):
    """Without BatchNorm, one pass of the mixed batch's mean loss is the split weighted sum."""
    both = Addon("none_both", ADDONS["none"].rule, needs_both=True, needs_se=False,
                 requires=(), uses=(), description="the aggregate, both gradients computed")
    monkeypatch.setitem(ADDONS, "none_both", both)
    kwargs = dict(epochs=1, batch_size=64, seed=2)
    joint, _ = run(digits, UnlearnConfig("srl_deepunlearn", **kwargs))
    split, _ = run(digits, UnlearnConfig("srl_deepunlearn", addon="none_both", **kwargs))
    assert not torch.equal(flat(joint), flat(digits["model"]))
    torch.testing.assert_close(flat(joint), flat(split), rtol=1e-4, atol=1e-6)


def test_salun_step_reuses_the_forget_gradient_of_neg_ce(digits, monkeypatch):
    """-CE methods take the mask from their forget gradient; others need one more pass."""
    import feasible.unlearn as engine

    calls = []
    original = engine._batch_saliency

    def spy(model, params, x, y_true, grads, fraction):
        calls.append(grads is not None)
        return original(model, params, x, y_true, grads, fraction)

    monkeypatch.setattr(engine, "_batch_saliency", spy)
    run(digits, UnlearnConfig("ga", addon="salun_step", epochs=1, batch_size=64))
    assert calls and all(calls)
    calls.clear()
    run(digits, UnlearnConfig("srl_authors", addon="salun_step", epochs=1, batch_size=64))
    assert calls and not any(calls)


def test_authors_protocol_runs_in_the_loop(digits):
    cfg = UnlearnConfig("srl_authors", addon="focus", protocol="authors", epochs=2,
                        batch_size=64, lr=1e-3)
    model, result = run(digits, cfg)
    assert result.diverged_epoch is None and [r["steps"] for r in result.epochs] == [2, 2]
    assert not torch.equal(flat(model), flat(digits["model"]))


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


def test_on_step_sees_both_estimates_and_changes_nothing(digits):
    """on_step gets both gradients and standard errors at every step, even for add-on 'none'."""
    cfg = UnlearnConfig("ngplus_authors", addon="none", lr=0.2, epochs=2, batch_size=32, k=4)
    seen = []
    watched, result = run(digits, cfg, on_step=seen.append)
    plain, _ = run(digits, cfg)
    assert len(seen) == sum(e["steps"] for e in result.epochs) > 0
    for step in seen:
        for key in ("g_u", "g_c", "se_u", "se_c", "keep", "direction"):
            assert set(step[key]) == {n for n, _ in watched.named_parameters()}, key
        assert all((s >= 0).all() for s in step["se_u"].values())
        assert step["loss_u"] is not None and step["loss_c"] is not None
    for (name, a), (_, b) in zip(watched.named_parameters(), plain.named_parameters()):
        assert torch.allclose(a, b, atol=1e-6), name  # the observer does not change the step
