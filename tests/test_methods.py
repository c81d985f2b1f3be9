"""Tests for feasible.methods: the methods table as data, the losses, batching."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from feasible.masks import ADDONS
from feasible.methods import (
    ADDON_USES,
    BATCHINGS,
    LOSSES,
    METHODS,
    PARTNER_STREAMS,
    MethodSpec,
    Pass,
    l1_penalty_grad,
    l1_weight,
    method_weights,
    passes,
)
from feasible.unlearn import UnlearnConfig

# (L_U, L_C, alpha, beta, batching, partner stream) per base method.
TABLE = {
    "ft": ("neg_ce", "ce", 0.0, 1.0, "retain", "cycle"),
    "ga": ("neg_ce", "ce", 1.0, 0.0, "forget", "cycle"),
    "ngplus": ("neg_ce", "ce", 0.05, 0.95, "paired", "cycle"),
    # the authors' unlearn/NGPlus.py and unlearn/SRL.py: beta * CE(D_r) + (1 - beta) * L_U(D_f),
    # beta = 0.95, an epoch over D_f with a retain loader re-made every epoch
    "ngplus_authors": ("neg_ce", "ce", 0.05, 0.95, "paired", "epoch"),
    "rl": ("random_label_ce", "ce", 1.0, 1.0, "sequential", "cycle"),
    "srl": ("shifted_label_ce", "ce", 1.0, 1.0, "paired", "cycle"),
    "srl_authors": ("shifted_label_ce", "ce", 0.05, 0.95, "paired", "epoch"),
    # DeepUnlearn's RandomRelabel: uniform labels on D_f, concatenated with D_r, shuffled
    "srl_deepunlearn": ("random_label_ce", "ce", 1.0, 1.0, "mixed", "cycle"),
    "l1_sparse": ("neg_ce", "ce", 0.0, 1.0, "retain", "cycle"),
    # the related methods (tests/test_eupmu.py, tests/test_minnorm.py): EUPMU on mixed batches
    # with random labels on D_f (unlearn/RL.py's mtl branch); MinNorm-OG's retain steps over D_f
    "eupmu": ("random_label_ce", "ce", 1.0, 1.0, "mixed", "cycle"),
    "eupmu_implicit": ("random_label_ce", "ce", 1.0, 1.0, "mixed", "cycle"),
    "minnorm_og": ("neg_ce", "ce", 0.0, 1.0, "paired", "cycle"),
}


def test_methods_follow_the_theory_table():
    assert set(METHODS) == set(TABLE)
    for name, (loss_u, loss_c, alpha, beta, batching, partner) in TABLE.items():
        spec = METHODS[name]
        assert spec.name == name
        assert (spec.loss_u, spec.loss_c, spec.batching) == (loss_u, loss_c, batching)
        assert spec.partner == partner and partner in PARTNER_STREAMS
        assert method_weights(spec) == pytest.approx((alpha, beta))
        assert spec.lr > 0 and spec.description
        assert spec.batching in BATCHINGS
    assert METHODS["l1_sparse"].penalty == "l1"
    assert all(METHODS[m].penalty is None for m in TABLE if m != "l1_sparse")
    assert METHODS["ngplus"].uses == METHODS["ngplus_authors"].uses == ("ngplus_a",)
    for name in ("ngplus", "srl"):
        assert "this project's form" in METHODS[name].description
    for name in ("ngplus_authors", "srl_authors"):
        assert "as the authors code it" in METHODS[name].description
        assert METHODS[name].epoch_over == "forget"
    assert "DeepUnlearn" in METHODS["srl_deepunlearn"].description
    assert METHODS["l1_sparse"].uses == ("l1_gamma",)


def test_method_uses_and_addon_uses_name_config_fields():
    fields = {f.name for f in dataclasses.fields(UnlearnConfig)}
    for spec in METHODS.values():
        assert set(spec.uses) <= fields
    assert set(ADDON_USES) == set(ADDONS)
    for names in ADDON_USES.values():
        assert set(names) <= fields


def test_specs_are_frozen_records():
    with pytest.raises(dataclasses.FrozenInstanceError):
        METHODS["ga"].lr = 1.0


@pytest.mark.parametrize("a", [0.0, 0.5, 0.95, 1.0])
def test_ngplus_weights_follow_a(a):
    assert method_weights(METHODS["ngplus"], ngplus_a=a) == pytest.approx((1 - a, a))
    assert method_weights(METHODS["ngplus_authors"], ngplus_a=a) == pytest.approx((1 - a, a))
    assert method_weights(METHODS["srl"], ngplus_a=a) == (1.0, 1.0)
    assert method_weights(METHODS["srl_authors"], ngplus_a=a) == (0.05, 0.95)


def test_passes():
    assert passes(METHODS["rl"]) == (Pass("forget", 1.0, 0.0), Pass("retain", 0.0, 1.0))
    assert passes(METHODS["ga"]) == (Pass("forget", 1.0, 1.0),)
    for name in ("ft", "ngplus", "srl", "l1_sparse"):
        assert passes(METHODS[name]) == (Pass("retain", 1.0, 1.0),)
    for name in ("ngplus_authors", "srl_authors"):
        assert passes(METHODS[name]) == (Pass("forget", 1.0, 1.0),)
    assert passes(METHODS["srl_deepunlearn"]) == (Pass("union", 1.0, 1.0),)


def _outputs(n=2000, classes=10, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, classes, generator=gen), torch.randint(classes, (n,), generator=gen)


def test_ce_and_neg_ce():
    outputs, targets = _outputs(50)
    gen = torch.Generator().manual_seed(0)
    expected = F.cross_entropy(outputs, targets)
    assert torch.allclose(LOSSES["ce"](outputs, targets, gen, 10), expected)
    assert torch.allclose(LOSSES["neg_ce"](outputs, targets, gen, 10), -expected)
    assert torch.equal(LOSSES["ce"].relabel(targets, gen, 10), targets)


def test_random_labels_are_uniform_and_may_equal_the_truth():
    _, targets = _outputs()
    gen = torch.Generator().manual_seed(1)
    labels = LOSSES["random_label_ce"].relabel(targets, gen, 10)
    counts = torch.bincount(labels, minlength=10).float()
    assert counts.min() > 150 and counts.max() < 250  # 200 expected per class
    same = (labels == targets).float().mean().item()
    assert 0.07 < same < 0.13  # 1/10 expected


def test_shifted_labels_never_equal_the_truth_and_cover_the_others():
    _, targets = _outputs()
    gen = torch.Generator().manual_seed(2)
    labels = LOSSES["shifted_label_ce"].relabel(targets, gen, 10)
    assert not (labels == targets).any()
    assert ((labels >= 0) & (labels < 10)).all()
    # for true class 3 the labels spread over the nine other classes, about evenly
    counts = torch.bincount(labels[targets == 3], minlength=10)
    assert counts[3] == 0 and (counts[torch.arange(10) != 3] > 0).all()


@pytest.mark.parametrize("name", ["random_label_ce", "shifted_label_ce"])
def test_random_labels_are_redrawn_at_every_visit_and_seeded(name):
    outputs, targets = _outputs(200)
    relabel = LOSSES[name].relabel
    gen = torch.Generator().manual_seed(3)
    first, second = relabel(targets, gen, 10), relabel(targets, gen, 10)
    assert not torch.equal(first, second)
    again = relabel(targets, torch.Generator().manual_seed(3), 10)
    assert torch.equal(first, again)
    loss = LOSSES[name](outputs, targets, torch.Generator().manual_seed(3), 10)
    assert torch.allclose(loss, F.cross_entropy(outputs, first))


def test_l1_weight_decays_linearly_to_zero():
    weights = [l1_weight(5e-4, e, 5) for e in range(5)]
    assert weights == pytest.approx([5e-4, 4e-4, 3e-4, 2e-4, 1e-4])
    assert l1_weight(5e-4, 5, 5) == 0.0


def test_l1_penalty_gradient_is_the_sign():
    params = {"w": torch.tensor([-2.0, 0.0, 3.0], requires_grad=True)}
    grad = l1_penalty_grad(params, 0.1)
    assert torch.allclose(grad["w"], torch.tensor([-0.1, 0.0, 0.1]))
    autograd = torch.autograd.grad(0.1 * params["w"].abs().sum(), params["w"])[0]
    assert torch.allclose(grad["w"], autograd)


@pytest.mark.parametrize("change, needle", [
    ({"loss_u": "hinge"}, "Unknown loss 'hinge'"),
    ({"batching": "interleaved"}, "Unknown batching 'interleaved'"),
    ({"batching": "mixed"}, "'epoch_over'"),
    ({"epoch_over": "both"}, "'epoch_over'"),
    ({"partner": "fresh"}, "Unknown partner stream 'fresh'"),
    ({"penalty": "l2"}, "Unknown penalty 'l2'"),
    ({"alpha": -1.0}, "alpha, beta >= 0"),
])
def test_method_spec_validation(change, needle):
    with pytest.raises(ValueError, match=needle):
        dataclasses.replace(METHODS["ngplus"], **change)


def test_a_new_method_is_one_record():
    spec = MethodSpec(name="ga_plus", loss_u="neg_ce", loss_c="ce", alpha=1.0, beta=0.1,
                      batching="paired", lr=0.1, epoch_over="forget", uses=(),
                      description="gradient ascent with a little retain loss")
    assert passes(spec) == (Pass("forget", 1.0, 1.0),)
    assert method_weights(spec) == (1.0, 0.1)
