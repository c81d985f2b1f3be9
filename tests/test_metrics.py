"""Tests for feasible.metrics on hand-made models and confidences."""
from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

from feasible.metrics import (
    METRICS,
    MIA_FEATURES,
    accuracy,
    attack_features,
    epochs_to_reach,
    evaluate,
    fidelity,
    gaps,
    mia_efficacy,
    predict,
    rua,
    svm_member_rate,
    ua_ratio,
)


class Scripted(nn.Module):
    """Logits read from the input: ``x[:, 0]`` on class 0, 0 elsewhere; records its mode."""

    def __init__(self, classes=10):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.classes = classes
        self.modes = []

    def forward(self, x):
        self.modes.append(self.training)
        logits = torch.zeros(len(x), self.classes, dtype=x.dtype)
        logits[:, 0] = x[:, 0]
        return logits + self.dummy


class Oracle(nn.Module):
    """A perfect classifier: the input is the one-hot label, scaled."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(20.0))

    def forward(self, x):
        return self.scale * x


def one_hot_set(n, classes=10, seed=0):
    y = torch.randint(classes, (n,), generator=torch.Generator().manual_seed(seed))
    return nn.functional.one_hot(y, classes).float(), y


def scripted_set(logit, n, seed):
    """Samples of class 0 whose true-label logit is ``logit`` plus a little noise."""
    gen = torch.Generator().manual_seed(seed)
    x = (logit + 0.3 * torch.randn(n, generator=gen))[:, None]
    return x, torch.zeros(n, dtype=torch.int64)


def test_perfect_model():
    model = Oracle()
    metrics = evaluate(model, forget=one_hot_set(50, seed=1), retain=one_hot_set(400, seed=2),
                       test=one_hot_set(100, seed=3))
    assert set(metrics) == set(METRICS)
    assert metrics["UA"] == 0.0 and metrics["RA"] == 100.0 and metrics["TA"] == 100.0
    assert 0.0 <= metrics["MIA"] <= 100.0


def test_accuracy_by_hand_and_mode_restored():
    model = Scripted()
    model.train()
    x = torch.tensor([[5.0], [5.0], [5.0], [-5.0]])  # predicts class 0, 0, 0, then class 1
    y = torch.tensor([0, 0, 3, 0])
    assert accuracy(model, x, y, batch_size=3) == 50.0
    assert model.modes == [False, False] and model.training
    model.eval()
    accuracy(model, x, y)
    assert not model.training


def test_mia_efficacy_on_confidences():
    gen = torch.Generator().manual_seed(0)
    member = 0.95 + 0.05 * torch.rand(500, generator=gen)      # memorised: confident
    non_member = 0.3 + 0.4 * torch.rand(500, generator=gen)    # unseen: unsure
    remembered = 0.95 + 0.05 * torch.rand(100, generator=gen)
    forgotten = 0.3 + 0.4 * torch.rand(100, generator=gen)
    assert mia_efficacy(member, non_member, remembered) < 5.0
    assert mia_efficacy(member, non_member, forgotten) > 95.0
    assert math.isnan(mia_efficacy(member, non_member, torch.tensor([0.5, math.nan])))


def test_mia_memorised_versus_not():
    model = Scripted()
    retain = scripted_set(8.0, 600, seed=1)     # confident: members
    test = scripted_set(0.0, 300, seed=2)       # unsure: non-members
    memorised = evaluate(model, forget=scripted_set(8.0, 100, seed=3), retain=retain, test=test)
    forgotten = evaluate(model, forget=scripted_set(0.0, 100, seed=4), retain=retain, test=test)
    assert memorised["MIA"] < 5.0 and forgotten["MIA"] > 95.0
    assert memorised["UA"] == 0.0


def test_evaluate_is_seeded_and_caps_the_attack():
    model = Scripted()
    sets = dict(forget=scripted_set(3.0, 50, 1), retain=scripted_set(4.0, 500, 2),
                test=scripted_set(2.5, 200, 3))
    assert evaluate(model, **sets, seed=5) == evaluate(model, **sets, seed=5)
    capped = evaluate(model, **sets, mia_samples=20)
    assert 0.0 <= capped["MIA"] <= 100.0


def test_nan_logits_do_not_crash():
    model = Oracle()
    with torch.no_grad():
        model.scale.fill_(math.nan)
    metrics = evaluate(model, forget=one_hot_set(20, seed=1), retain=one_hot_set(50, seed=2),
                       test=one_hot_set(30, seed=3))
    assert metrics["UA"] == 100.0 and metrics["RA"] == 0.0 and metrics["TA"] == 0.0
    assert math.isnan(metrics["MIA"])
    full = evaluate(model, forget=one_hot_set(20, seed=1), retain=one_hot_set(50, seed=2),
                    test=one_hot_set(30, seed=3), reference=one_hot_set(20, seed=1)[1],
                    mia_features=MIA_FEATURES)
    assert full["FID"] == 0.0 and full["rUA"] == -100.0
    assert all(math.isnan(v) for k, v in full.items() if k.startswith("MIA"))


def test_gaps():
    out = gaps({"UA": 5.0, "RA": 99.0, "TA": 90.0, "MIA": 10.0},
               {"UA": 8.0, "RA": 100.0, "TA": 91.0, "MIA": 14.0})
    assert out == {"UA": 3.0, "RA": 1.0, "TA": 1.0, "MIA": 4.0, "avg_gap": 2.25}
    assert gaps({"UA": 1.0}, {"UA": 4.0}, keys=("UA",)) == {"UA": 3.0, "avg_gap": 3.0}
    assert math.isnan(gaps({"UA": math.nan}, {"UA": 4.0}, keys=("UA",))["avg_gap"])
    with pytest.raises(ValueError, match="'reference' parameter of gaps lacks"):
        gaps({"UA": 1.0, "RA": 1.0, "TA": 1.0, "MIA": 1.0}, {"UA": 1.0})


def test_ua_ratio():
    assert ua_ratio(5.0, 10.0) == 0.5
    assert math.isnan(ua_ratio(5.0, 0.0))
    assert math.isnan(ua_ratio(math.nan, 3.0))
    with pytest.raises(ValueError, match="'ua'"):
        ua_ratio(-1.0, 3.0)


# --- the authors' metrics --------------------------------------------------------------------

def test_rua_and_fidelity_on_constructed_predictions():
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    retrained = torch.tensor([0, 1, 2, 3, 4, 5, 6, 0, 0, 0])   # 70% right
    model = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 0])       # 90% right
    assert rua(model, retrained, labels) == pytest.approx(20.0)
    assert rua(retrained, model, labels) == pytest.approx(-20.0)
    assert rua(retrained, retrained, labels) == 0.0
    assert fidelity(model, retrained) == pytest.approx(80.0)
    assert fidelity(retrained, retrained) == 100.0
    assert fidelity(torch.full((10,), -1), torch.full((10,), -1)) == 0.0  # diverged: no match
    with pytest.raises(ValueError, match="equal lengths"):
        rua(model[:3], retrained, labels)
    with pytest.raises(ValueError, match="non-empty"):
        fidelity(model[:0], retrained[:0])


def _naive_features(p, y):
    """The authors' SVC_MIA features, one sample at a time."""
    out = {name: [] for name in MIA_FEATURES}
    for row, label in zip(p.tolist(), y.tolist()):
        out["correctness"].append([float(max(range(len(row)), key=row.__getitem__) == label)])
        out["confidence"].append([row[label]])
        out["entropy"].append([-sum(q * math.log(q) for q in row if q > 0)])
        total = 0.0
        for k, q in enumerate(row):
            prob = 1 - q if k == label else q
            arg = 1 - q if k == label else q
            total += prob * (math.log(arg) if arg > 0 else math.log(1e-30))
        out["m_entropy"].append([-total])
        out["prob"].append(row)
    return {name: torch.tensor(v, dtype=torch.float64) for name, v in out.items()}


def test_attack_features_match_the_authors_formulas():
    p = torch.tensor([[0.7, 0.2, 0.1], [0.0, 1.0, 0.0], [0.3, 0.3, 0.4], [0.5, 0.5, 0.0]])
    y = torch.tensor([0, 1, 0, 2])
    features = attack_features(p, y)
    expected = _naive_features(p, y)
    assert list(features) == list(MIA_FEATURES)
    for name in MIA_FEATURES:
        torch.testing.assert_close(features[name], expected[name])
    assert features["prob"].shape == (4, 3) and features["entropy"].shape == (4, 1)
    nan_row = attack_features(torch.tensor([[math.nan, math.nan], [0.9, 0.1]]),
                              torch.tensor([0, 0]))
    assert all(torch.isnan(f[0]).all() and torch.isfinite(f[1]).all()
               for f in nan_row.values())


def test_member_rate_and_efficacy_add_to_100():
    gen = torch.Generator().manual_seed(0)
    member = torch.rand(300, 3, generator=gen) + 1.0
    non_member = torch.rand(300, 3, generator=gen)
    target = torch.cat([torch.rand(30, 3, generator=gen) + 1.0, torch.rand(70, 3, generator=gen)])
    rate = svm_member_rate(member, non_member, target)
    assert rate == pytest.approx(30.0, abs=3.0)
    assert rate + mia_efficacy(member, non_member, target) == pytest.approx(100.0)
    assert math.isnan(svm_member_rate(member, non_member, torch.full((2, 3), math.nan)))


def test_merged_attack_is_the_unmerged_one():
    """Equal values fitted once with their count as weight: the same SVM as SalUn's."""
    gen = torch.Generator().manual_seed(1)
    # memorised-like confidences: many exactly 1, the rest on a coarse grid (many repeats)
    member = torch.where(torch.rand(600, generator=gen) < 0.5, torch.ones(600),
                         (torch.rand(600, generator=gen) * 50).round() / 50)
    non_member = (torch.rand(600, generator=gen) * 50).round() / 50
    target = torch.cat([torch.ones(40), (torch.rand(60, generator=gen) * 50).round() / 50])
    full = svm_member_rate(member, non_member, target, merge=False)
    assert svm_member_rate(member, non_member, target, resolution=None) == pytest.approx(full)
    assert svm_member_rate(member, non_member, target) == pytest.approx(full)  # 1e-4 grid
    # continuous values: rounding to 1e-4 moves the rate by at most a sample or two here
    member, non_member = torch.rand(500, generator=gen) ** 0.2, torch.rand(500, generator=gen)
    target = torch.rand(200, generator=gen) ** 0.5
    assert abs(svm_member_rate(member, non_member, target)
               - svm_member_rate(member, non_member, target, merge=False)) <= 1.0
    # several dimensions (the "prob" feature)
    member, non_member = torch.rand(300, 3, generator=gen) + 0.5, torch.rand(300, 3, generator=gen)
    target = torch.rand(50, 3, generator=gen) + 0.2
    assert svm_member_rate(member, non_member, target, resolution=None) == pytest.approx(
        svm_member_rate(member, non_member, target, merge=False))


@pytest.mark.parametrize("resolution", [0, -1e-4, math.inf, True, "1e-4"])
def test_merged_attack_refuses_a_bad_resolution(resolution):
    with pytest.raises(ValueError, match="'resolution'.*" + re.escape(repr(resolution))):
        svm_member_rate(torch.ones(3), torch.zeros(3), torch.ones(2), resolution=resolution)


def test_attack_members_are_salun_s_and_the_spread_is_reported():
    """Members: the first |test| retain samples; member_subsets adds K other member sets."""
    model = Scripted()
    confident, unsure = scripted_set(8.0, 100, seed=1), scripted_set(0.0, 300, seed=2)
    # the first 200 retain samples are unsure: SalUn's members look like the test set
    retain = (torch.cat([unsure[0][:200], confident[0]]), torch.cat([unsure[1][:200],
                                                                     confident[1]]))
    sets = dict(forget=scripted_set(8.0, 50, seed=3), retain=retain,
                test=(unsure[0][100:], unsure[1][100:]))
    metrics = evaluate(model, **sets, mia_features=["entropy"], member_subsets=3, seed=4)

    def confidences(batch):
        return attack_features(model(batch[0]).softmax(dim=1), batch[1])["confidence"]

    members = confidences((retain[0][:200], retain[1][:200]))
    assert metrics["MIA"] == pytest.approx(mia_efficacy(
        members, confidences(sets["test"]), confidences(sets["forget"])))
    spread = metrics["MIA_subsets"]
    assert set(spread) == {"confidence", "entropy"}
    assert all(len(rates) == 3 for rates in spread.values())
    assert evaluate(model, **sets, member_subsets=3, seed=4)["MIA_subsets"]["confidence"] == \
        spread["confidence"]  # seeded
    assert "MIA_subsets" not in evaluate(model, **sets)


def test_evaluate_reports_the_authors_metrics_when_asked():
    model = Scripted()
    forget = scripted_set(8.0, 60, seed=3)
    sets = dict(forget=forget, retain=scripted_set(8.0, 400, seed=1),
                test=scripted_set(0.0, 200, seed=2))
    plain = evaluate(model, **sets)
    assert set(plain) == set(METRICS)
    reference = torch.cat([torch.zeros(45, dtype=torch.int64), torch.ones(15, dtype=torch.int64)])
    full = evaluate(model, **sets, reference=reference, mia_features=MIA_FEATURES)
    assert {k: full[k] for k in METRICS} == plain
    assert full["rUA"] == pytest.approx(25.0)     # 100% right vs the reference's 75%
    assert full["FID"] == pytest.approx(75.0)
    assert full["MIA"] == full["MIA_efficacy_confidence"]
    for name in MIA_FEATURES:
        assert full[f"MIA_member_{name}"] + full[f"MIA_efficacy_{name}"] == pytest.approx(100.0)
        assert 0.0 <= full[f"MIA_member_{name}"] <= 100.0
    assert full["MIA_member_confidence"] > 95.0   # memorised, as confident as the members
    assert set(evaluate(model, **sets, mia_features=["entropy"])) == set(METRICS) | {
        "MIA_member_entropy", "MIA_efficacy_entropy"}
    assert predict(model, forget[0]).tolist() == [0] * 60


def test_epochs_to_reach():
    assert epochs_to_reach([0.0, 3.0, 9.5, 10.0], 10.0) == 3
    assert epochs_to_reach([0.0, 3.0, 9.5, 10.0], 10.0, tol=0.0) == 4
    assert epochs_to_reach([0.0, 20.0], 10.0) is None
    assert epochs_to_reach([math.nan, 10.0], 10.0) == 2
    assert epochs_to_reach([], 10.0) is None
    with pytest.raises(ValueError, match="'tol'"):
        epochs_to_reach([1.0], 1.0, tol=-1.0)


@pytest.mark.parametrize("kwargs, needle", [
    ({"batch_size": 0}, "'batch_size'"),
    ({"mia_samples": 1}, "'mia_samples'"),
    ({"seed": -1}, "'seed'"),
    ({"mia_features": "entropy"}, "'mia_features'"),
    ({"mia_features": ["loss"]}, "'mia_features'"),
    ({"member_subsets": -1}, "'member_subsets'"),
    ({"member_subsets": 1.5}, "'member_subsets'"),
    ({"reference": torch.zeros(3, dtype=torch.int64)}, "'reference'"),
])
def test_evaluate_validation(kwargs, needle):
    sets = dict(forget=one_hot_set(5), retain=one_hot_set(5), test=one_hot_set(5))
    with pytest.raises(ValueError, match=needle):
        evaluate(Oracle(), **sets, **kwargs)
    x, y = one_hot_set(5)
    with pytest.raises(ValueError, match="'forget'"):
        evaluate(Oracle(), forget=(x[:0], y[:0]), retain=(x, y), test=(x, y))


# --- the channels-last layout of evaluation's forward passes ---------------------------------

def test_fast_layout_gives_the_same_outputs_and_restores_the_parameters():
    from feasible.metrics import _outputs
    from feasible.models import build_model

    torch.manual_seed(0)
    model = build_model("small_cnn", in_channels=1, num_classes=10, image_size=12,
                        mean=[0.5], std=[0.5], width=4)
    model.train()
    params = list(model.parameters())
    before = [p.detach().clone() for p in params]
    x = torch.rand(40, 1, 12, 12)
    fast = _outputs(model, x, batch_size=16)
    plain = _outputs(model, x, batch_size=16, fast_layout=False)
    torch.testing.assert_close(fast.probs, plain.probs, rtol=1e-5, atol=1e-6)
    assert (fast.predictions == plain.predictions).float().mean() >= 0.95  # near-ties may flip
    assert model.training                                   # the mode is restored
    assert list(model.parameters()) == params               # the same Parameter objects ...
    assert all(p.is_contiguous() for p in params)           # ... in their usual layout ...
    assert all(torch.equal(p, b) for p, b in zip(params, before))  # ... with their values


def test_fast_layout_restores_the_layout_when_the_forward_pass_fails():
    from feasible.metrics import _outputs
    from feasible.models import build_model

    model = build_model("small_cnn", in_channels=1, num_classes=10, image_size=12,
                        mean=[0.5], std=[0.5], width=4)
    with pytest.raises(RuntimeError):
        _outputs(model, torch.rand(4, 3, 12, 12), batch_size=4)  # 3 channels: refused
    assert all(p.is_contiguous() for p in model.parameters())
