"""Tests for feasible.theory_prob: posterior Monte Carlo, the recorded epoch, calibration."""
import math

import pytest
import torch
from torch import nn

from feasible import masks
from feasible.theory_prob import (
    agreement_monte_carlo,
    alignment_monte_carlo,
    calibration,
    record_unlearning_epoch,
)


def _inputs(n: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    g_u, g_c = torch.randn(2, n, generator=gen, dtype=torch.float64)
    se_u, se_c = 0.2 + torch.rand(2, n, generator=gen, dtype=torch.float64)
    return g_u, g_c, se_u, se_c, gen


def test_agreement_monte_carlo_matches_closed_form():
    g_u, g_c, se_u, se_c, gen = _inputs(50)
    mc = agreement_monte_carlo(g_u, g_c, se_u, se_c, n_draws=20_000, generator=gen, chunk=3000)
    closed = masks.agreement_probability(g_u, g_c, se_u, se_c)
    sd = (closed * (1 - closed) / 20_000).sqrt()
    assert ((mc.estimate - closed).abs() < 5 * sd).all()
    assert torch.allclose(mc.stderr, (mc.estimate * (1 - mc.estimate) / 20_000).sqrt())


def test_agreement_monte_carlo_exact_cases():
    # se = 0: the draws equal the estimates, so the share is exactly the sign agreement.
    g_u = torch.tensor([1.0, -2.0, 3.0, 0.0], dtype=torch.float64)
    g_c = torch.tensor([2.0, 1.0, 4.0, 1.0], dtype=torch.float64)
    zero = torch.zeros(4, dtype=torch.float64)
    mc = agreement_monte_carlo(g_u, g_c, zero, zero, n_draws=10, generator=torch.Generator())
    assert mc.estimate.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert mc.stderr.tolist() == [0.0] * 4


def test_alignment_monte_carlo_matches_sum_u_f():
    g_u, g_c, se_u, se_c, gen = _inputs(12, seed=1)
    u = torch.randn(12, generator=gen, dtype=torch.float64)
    mc = alignment_monte_carlo(u, g_u, g_c, se_u, se_c, n_draws=20_000, generator=gen)
    f = masks.focus(g_u, g_c, se_u, se_c, variant="signed")  # E[(sgn g_U + sgn g_C)/2] = f per coordinate
    assert abs(mc.estimate.item() - (u * f).sum().item()) < 5 * mc.stderr.item()
    assert mc.estimate.shape == ()


def test_alignment_monte_carlo_is_deterministic_without_noise():
    g_u = torch.tensor([1.0, -1.0, 2.0])
    g_c = torch.tensor([1.0, 1.0, -3.0])
    zero = torch.zeros(3)
    u = torch.tensor([2.0, 5.0, 7.0])
    mc = alignment_monte_carlo(u, g_u, g_c, zero, zero, n_draws=4, generator=torch.Generator())
    assert mc.estimate.item() == 2.0  # (1+1)/2*2 + 0*5 + 0*7
    assert mc.stderr.item() == 0.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_draws": 1}, "'n_draws' parameter of agreement_monte_carlo"),
        ({"n_draws": 10, "chunk": 0}, "'chunk' parameter"),
    ],
)
def test_agreement_monte_carlo_rejects_bad_values(kwargs, match):
    g_u, g_c, se_u, se_c, gen = _inputs(3)
    with pytest.raises(ValueError, match=match):
        agreement_monte_carlo(g_u, g_c, se_u, se_c, generator=gen, **kwargs)


def test_validation_of_shapes_and_standard_errors():
    g_u, g_c, se_u, se_c, gen = _inputs(3)
    with pytest.raises(ValueError, match="'se_u' argument .* >= 0"):
        agreement_monte_carlo(g_u, g_c, -se_u, se_c, n_draws=5, generator=gen)
    with pytest.raises(ValueError, match="same shape"):
        agreement_monte_carlo(g_u, g_c[:2], se_u, se_c, n_draws=5, generator=gen)
    with pytest.raises(ValueError, match="'u' and 'g_u'"):
        alignment_monte_carlo(g_u[:2], g_u, g_c, se_u, se_c, n_draws=5, generator=gen)


def test_calibration_by_hand():
    phi = torch.tensor([0.05, 0.08, 0.95, 0.92, 0.55, 0.5])
    g = torch.tensor([-1.0, 1.0, 1.0, 1.0, -1.0, 0.0])  # the last one has no sign: left out
    table = calibration(phi, g, bins=2)
    assert table.count.tolist() == [2.0, 3.0]
    assert table.positive_share.tolist() == pytest.approx([0.5, 2 / 3])
    assert table.phi_mean.tolist() == pytest.approx([0.065, (0.95 + 0.92 + 0.55) / 3])
    expected = (2 * abs(0.5 - 0.065) + 3 * abs(2 / 3 - (0.95 + 0.92 + 0.55) / 3)) / 5
    assert table.error == pytest.approx(expected)


def test_calibration_of_a_calibrated_model_is_small():
    gen = torch.Generator().manual_seed(3)
    phi = torch.rand(200_000, generator=gen, dtype=torch.float64)
    g = torch.where(torch.rand(200_000, generator=gen, dtype=torch.float64) < phi, 1.0, -1.0)
    table = calibration(phi, g, bins=10)
    assert table.error < 0.01
    assert math.isclose(float(table.count.sum()), 200_000)


def test_calibration_rejects_bad_values():
    with pytest.raises(ValueError, match="'bins' parameter of calibration"):
        calibration(torch.rand(3), torch.rand(3), bins=0)
    with pytest.raises(ValueError, match="lie in \\[0, 1\\]"):
        calibration(torch.tensor([1.5]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="same shape"):
        calibration(torch.rand(3), torch.rand(2))


def _tiny_problem():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 5, generator=gen)
    y = torch.randint(0, 3, (40,), generator=gen)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    return model, (x[:16], y[:16]), (x[16:], y[16:])


def test_record_unlearning_epoch_shapes_and_model_untouched():
    model, forget, retain = _tiny_problem()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    record = record_unlearning_epoch(model, forget, retain, batch_size=8, k=4, lr=0.5)
    d = sum(p.numel() for p in model.parameters())
    assert record.prob.shape == (2, d) and record.active.shape == (2, d)
    assert ((record.prob >= 0) & (record.prob <= 1)).all()
    assert (record.prob[~record.active] == 0.5).all()
    assert len(record.loss_u) == len(record.loss_c) == 2
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())


def test_record_unlearning_epoch_steps_change_the_second_step():
    model, forget, retain = _tiny_problem()
    still = record_unlearning_epoch(model, forget, retain, batch_size=8, k=4, lr=0.0)
    moved = record_unlearning_epoch(model, forget, retain, batch_size=8, k=4, lr=1.0)
    assert torch.equal(still.prob[0], moved.prob[0])  # same first batch, same model
    assert not torch.equal(still.prob[1], moved.prob[1])  # the step moved the model


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"batch_size": 3, "k": 4}, "'batch_size' parameter"),
        ({"batch_size": 17}, "'batch_size' parameter"),
        ({"batch_size": 8, "lr": -1.0}, "'lr' parameter"),
        ({"batch_size": 8, "beta": -0.1}, "'beta' parameter"),
    ],
)
def test_record_unlearning_epoch_rejects_bad_values(kwargs, match):
    model, forget, retain = _tiny_problem()
    with pytest.raises(ValueError, match=match):
        record_unlearning_epoch(model, forget, retain, **kwargs)
