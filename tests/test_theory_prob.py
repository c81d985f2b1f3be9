"""Tests for feasible.theory_prob: posterior Monte Carlo, the recorded epoch, calibration, the
focus certificate, the EMA bounds, the guarantee Monte Carlo, per-sample rows and batch pairs."""
import math

import pytest
import torch
from torch import nn

from feasible import masks, noise
from feasible.demo import flatten, full_gradient
from feasible.theory_prob import (
    agreement_monte_carlo,
    agreement_probability_as_coded,
    alignment_monte_carlo,
    calibration,
    ema_bounds,
    focus_certificate,
    focus_guarantee_monte_carlo,
    paired_batch_inner_products,
    per_sample_gradients,
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
    still = record_unlearning_epoch(model, forget, retain, batch_size=8, k=4, lr=1e-9)
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


# --- the focus step's certificate, the EMA bounds, the guarantee -----------------------------


def test_focus_certificate_by_hand():
    f = torch.tensor([1.0, 0.5, 0.25])
    g_u = torch.tensor([2.0, -1.0, 4.0])
    g_c = torch.tensor([1.0, 3.0, -2.0])
    cert = focus_certificate(f, g_u, g_c, alpha=1.0, beta=2.0)
    # S_uu = 4 + 0.5 + 4 = 8.5; S_cc = 1 + 4.5 + 1 = 6.5; S_uc = 2 - 1.5 - 2 = -1.5
    assert cert.s_uu.item() == 8.5 and cert.s_cc.item() == 6.5 and cert.s_uc.item() == -1.5
    assert cert.violation.item() == pytest.approx(1.5 - min(0.5 * 8.5, 2.0 * 6.5))
    assert cert.descent_u.item() == pytest.approx(1.0 * 8.5 + 2.0 * -1.5)
    assert cert.descent_c.item() == pytest.approx(1.0 * -1.5 + 2.0 * 6.5)
    assert cert.violation.dtype == torch.float64


@pytest.mark.parametrize("alpha, beta", [(0.8, 0.5), (0.05, 0.95), (1.0, 1.0)])
def test_focus_certificate_is_descent_for_both(alpha, beta):
    gen = torch.Generator().manual_seed(2)
    g_u = torch.randn(4000, 6, generator=gen, dtype=torch.float64)
    g_c = -0.7 * g_u + torch.randn(4000, 6, generator=gen, dtype=torch.float64)
    f = torch.rand(4000, 6, generator=gen, dtype=torch.float64)
    cert = focus_certificate(f, g_u, g_c, alpha=alpha, beta=beta)
    both = (cert.descent_u >= 0) & (cert.descent_c >= 0)
    assert torch.equal(cert.violation <= 0, both)
    assert 0.05 < both.double().mean() < 0.95  # both outcomes occur
    u = f * (alpha * g_u + beta * g_c)  # the moments' algebra
    assert torch.allclose(cert.descent_u, alpha * cert.s_uu + beta * cert.s_uc)
    assert torch.allclose((u * g_c).sum(1), cert.descent_c)


def test_focus_certificate_rejects_bad_values():
    x = torch.ones(3)
    with pytest.raises(ValueError, match="'alpha' parameter of focus_certificate"):
        focus_certificate(x, x, x, alpha=0.0, beta=1.0)
    with pytest.raises(ValueError, match="same shape"):
        focus_certificate(x, x[:2], x, alpha=1.0, beta=1.0)
    with pytest.raises(ValueError, match=">= 0 everywhere"):
        focus_certificate(-x, x, x, alpha=1.0, beta=1.0)


def test_ema_bounds_values():
    b = ema_bounds(0.9)
    assert b.z_first == pytest.approx(1 / math.sqrt(0.1)) and b.z_first == pytest.approx(3.1623, abs=1e-4)
    assert b.z_later == pytest.approx(1.0541, abs=1e-4)
    assert (b.phi_low, b.phi_high) == pytest.approx((0.1459, 0.8541), abs=1e-4)
    assert (b.prob_low, b.prob_high) == pytest.approx((0.2492, 0.7508), abs=1e-4)
    assert ema_bounds(1.0).z_first == math.inf
    with pytest.raises(ValueError, match="'rho' parameter of ema_bounds"):
        ema_bounds(0.0)


def test_ema_bounds_hold_for_the_recurrence():
    gen = torch.Generator().manual_seed(4)
    b = ema_bounds(0.9)
    state_u = state_c = None
    for step in range(6):
        # scales far above sqrt(eps), changing from step to step: the bound must not care
        g_u = 10.0 ** step * torch.randn(5000, generator=gen, dtype=torch.float64)
        g_c = torch.randn(5000, generator=gen, dtype=torch.float64)
        s_u, state_u = noise.ema_scale(g_u, state_u)
        s_c, state_c = noise.ema_scale(g_c, state_c)
        bound = b.z_first if step == 0 else b.z_later
        assert (g_u / s_u).abs().max() < bound and (g_c / s_c).abs().max() < bound
        if step == 0:
            assert (g_u / s_u).abs().max() > 0.999 * bound  # reached up to rounding
        else:
            P = masks.agreement_probability(g_u, g_c, s_u, s_c)
            assert b.prob_low < P.min() and P.max() < b.prob_high


def test_agreement_probability_as_coded_matches_in_float64():
    g_u, g_c, se_u, se_c, _ = _inputs(200)
    coded = agreement_probability_as_coded(g_u, g_c, se_u, se_c)
    assert torch.allclose(coded, masks.agreement_probability(g_u, g_c, se_u, se_c), atol=1e-12)


def test_agreement_probability_as_coded_rounds_in_float32():
    # |z| ~ 1e-4 of opposite signs: P = 1/2 - 2e-8 * 2/pi, below float32's spacing at 1/2.
    g_u = torch.tensor([1e-4], dtype=torch.float32)
    g_c = torch.tensor([-1e-4], dtype=torch.float32)
    s = torch.ones(1, dtype=torch.float32)
    assert agreement_probability_as_coded(g_u, g_c, s, s).item() >= 0.5  # kept at p = 1/2
    assert not masks.prob_mask(g_u, g_c, s, s, 0.5).item()  # the library's mask is AND
    with pytest.raises(ValueError, match="must be > 0"):
        agreement_probability_as_coded(g_u, g_c, 0 * s, s)


def test_focus_guarantee_monte_carlo_under_the_hypothesis():
    gen = torch.Generator().manual_seed(5)
    mc = focus_guarantee_monte_carlo(n_draws=3000, dim=30, generator=gen, se_u=0.5, se_c=2.0,
                                     chunk=700)
    est = mc.estimates
    assert abs(est["<ghat_u, ghat_c>"].estimate) < 4 * est["<ghat_u, ghat_c>"].stderr
    for name in ("<u, g_u>", "<u, g_c>", "S_uc"):
        assert est[name].estimate > 5 * est[name].stderr
    for name in ("lift_u", "lift_c"):  # E[g | ghat] = lambda ghat holds at rho = 0
        assert abs(est[name].estimate) < 4 * est[name].stderr
    assert mc.pathwise_slack >= 0  # S_uc >= <ghat_u, ghat_c> / 2 on every draw
    assert 0 <= mc.certified <= 1


def test_focus_guarantee_monte_carlo_under_conflict():
    gen = torch.Generator().manual_seed(6)
    mc = focus_guarantee_monte_carlo(n_draws=2000, dim=30, generator=gen, rho=-0.9)
    est = mc.estimates
    assert est["<ghat_u, ghat_c>"].estimate < -5 * est["<ghat_u, ghat_c>"].stderr
    assert est["lift_c"].estimate < -5 * est["lift_c"].stderr  # the lift fails
    assert mc.pathwise_slack >= 0


@pytest.mark.parametrize(
    "kwargs, match",
    [({"n_draws": 1}, "'n_draws'"), ({"dim": 0}, "'dim'"), ({"rho": 1.0}, "'rho'"),
     ({"tau": 0.0}, "'tau'"), ({"alpha": -1.0}, "'alpha'")],
)
def test_focus_guarantee_monte_carlo_rejects_bad_values(kwargs, match):
    options = {"n_draws": 10, "dim": 3, "generator": torch.Generator(), **kwargs}
    with pytest.raises(ValueError, match=match):
        focus_guarantee_monte_carlo(**options)



def test_per_sample_gradients_average_to_the_batch_gradient():
    model, forget, _ = _tiny_problem()
    rows = per_sample_gradients(model, torch.nn.functional.cross_entropy, forget, chunk=5)
    assert rows.shape == (16, sum(p.numel() for p in model.parameters()))
    full = flatten(full_gradient(model, torch.nn.functional.cross_entropy, forget))
    assert torch.allclose(rows.mean(0), full, atol=1e-6)
    one = flatten(full_gradient(model, torch.nn.functional.cross_entropy, (forget[0][3:4], forget[1][3:4])))
    assert torch.allclose(rows[3], one, atol=1e-6)
    with pytest.raises(ValueError, match="'chunk' parameter of per_sample_gradients"):
        per_sample_gradients(model, torch.nn.functional.cross_entropy, forget, chunk=0)


def test_paired_batch_inner_products_by_hand_and_in_expectation():
    gen = torch.Generator().manual_seed(7)
    grads_u = torch.randn(12, 4, generator=gen, dtype=torch.float64) + 1.0
    grads_c = torch.randn(9, 4, generator=gen, dtype=torch.float64) + 0.5
    draw = torch.Generator().manual_seed(3)
    value = paired_batch_inner_products(grads_u, grads_c, batch_size=5, n_draws=1, generator=draw)
    replay = torch.Generator().manual_seed(3)
    rows = torch.rand(1, 12, generator=replay).argsort(dim=1)[0, :5]
    cols = torch.rand(1, 9, generator=replay).argsort(dim=1)[0, :5]
    assert value.item() == pytest.approx((grads_u[rows].mean(0) @ grads_c[cols].mean(0)).item())
    many = paired_batch_inner_products(grads_u, grads_c, batch_size=5, n_draws=20_000, generator=draw)
    exact = (grads_u.mean(0) @ grads_c.mean(0)).item()
    assert abs(many.mean().item() - exact) < 5 * many.std().item() / 20_000**0.5
    full = paired_batch_inner_products(grads_u, grads_c, batch_size=9, n_draws=3, generator=draw)
    assert full.shape == (3,)  # all of grads_c in every draw: only the rows of grads_u vary
    every = paired_batch_inner_products(grads_u, grads_c, batch_size=9, n_draws=600, generator=draw)
    assert every.shape == (600,) and every.dtype == torch.float64


@pytest.mark.parametrize("kwargs, match", [({"batch_size": 0}, "'batch_size'"),
                                           ({"batch_size": 10}, "'batch_size'"),
                                           ({"n_draws": 0}, "'n_draws'")])
def test_paired_batch_inner_products_rejects_bad_values(kwargs, match):
    options = {"batch_size": 2, "n_draws": 2, "generator": torch.Generator(), **kwargs}
    with pytest.raises(ValueError, match=match):
        paired_batch_inner_products(torch.ones(9, 3), torch.ones(12, 3), **options)
    with pytest.raises(ValueError, match="same number of columns"):
        paired_batch_inner_products(torch.ones(9, 3), torch.ones(12, 2), batch_size=2, n_draws=2,
                                    generator=torch.Generator())
