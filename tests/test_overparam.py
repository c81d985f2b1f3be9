"""Tests of feasible.overparam: MinNorm-OG's regression setting, with its exact reference."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from feasible import overparam as op


@pytest.fixture(scope="module")
def setting():
    data = op.sine_data(seed=0)
    model = op.RandomFeatures(300, seed=0)
    model.set_theta(op.min_norm_weights(model, data.x_all, data.y_all))
    reference = copy.deepcopy(model).set_theta(
        op.min_norm_weights(model, data.x_retain, data.y_retain))
    return data, model, reference


def test_sine_data_is_the_authors_setting():
    data = op.sine_data(seed=3)
    assert data.x_retain.shape == (50, 1) and data.x_forget.shape == (5, 1)
    torch.testing.assert_close(data.y_retain, torch.sin(data.x_retain))
    assert torch.all(data.y_forget == 1.5)
    low, high = op.X_RANGE
    assert data.x_all.min() >= low and data.x_all.max() <= high
    gaps = (data.x_forget - data.x_retain.T).abs().min()
    assert gaps >= 0.3  # the forget points keep their distance from the retained ones
    assert torch.equal(op.sine_data(seed=3).x_forget, data.x_forget)  # seeded


def test_sine_data_rejects_bad_values():
    with pytest.raises(ValueError, match="'n_forget' parameter of sine_data must be an int"):
        op.sine_data(n_forget=0)
    with pytest.raises(ValueError, match="'min_gap' parameter of sine_data must be a float"):
        op.sine_data(min_gap=-1.0)


def test_the_original_interpolates_everything_and_the_reference_the_retained(setting):
    data, model, reference = setting
    with torch.no_grad():
        assert float((model(data.x_all) - data.y_all).abs().max()) < 1e-6
        assert float((reference(data.x_retain) - data.y_retain).abs().max()) < 1e-6
    # the reference is the smallest interpolator of D_r; the original fits more points
    assert float(reference.theta.norm()) < float(model.theta.norm())


def test_fine_tuning_cannot_leave_the_original(setting):
    """At an interpolating model the retain gradient is zero (Block et al., Thm 1): FT and
    NGPlus do not move, while the original is far from the reference."""
    data, model, reference = setting
    for method in ("ft", "ngplus"):
        tuned = copy.deepcopy(model)
        op.unlearn_regression(tuned, data, method, lr=op.stable_lr(model, data.x_all), epochs=20)
        assert float((tuned.theta - model.theta).norm()) < 1e-6
    assert op.sup_distance(model, reference) > 1.0


def test_minnorm_og_reaches_the_minimum_norm_interpolator(setting):
    data, model, reference = setting
    unlearned = copy.deepcopy(model)
    history = op.unlearn_regression(unlearned, data, "minnorm_og", epochs=3, reg_coef=1.0,
                                    lr=op.stable_lr(model, data.x_all))
    torch.testing.assert_close(unlearned.theta, reference.theta, rtol=1e-6, atol=1e-6)
    assert op.sup_distance(unlearned, reference) < 1e-6
    assert history[-1]["sup_error"] == pytest.approx(op.sup_error(reference), abs=1e-6)
    assert [h["epoch"] for h in history] == [1, 2, 3]


def test_partial_projections_shrink_the_orthogonal_part(setting):
    data, model, reference = setting
    unlearned = copy.deepcopy(model)
    op.unlearn_regression(unlearned, data, "minnorm_og", epochs=1, reg_coef=0.5,
                          lr=1e-12)  # one projection at c = 0.5, a negligible step
    before = float((model.theta - reference.theta).norm())
    after = float((unlearned.theta - reference.theta).norm())
    assert after == pytest.approx(0.5 * before, rel=1e-6)


def test_gradient_ascent_moves_away_from_the_forget_points(setting):
    data, model, _ = setting
    ascended = copy.deepcopy(model)
    history = op.unlearn_regression(ascended, data, "ga", lr=op.stable_lr(model, data.x_all),
                                    epochs=3)
    with torch.no_grad():
        forget = float(((ascended(data.x_forget) - data.y_forget) ** 2).mean())
    assert forget > history[0]["forget_mse"]


def test_unlearn_regression_rejects_bad_values(setting):
    data, model, _ = setting
    with pytest.raises(ValueError, match="Unknown regression method 'x'; expected one of 'ft'"):
        op.unlearn_regression(model, data, "x", lr=0.1, epochs=1)
    with pytest.raises(ValueError, match="'reg_coef' parameter of unlearn_regression must be a "
                                         "float in"):
        op.unlearn_regression(model, data, "minnorm_og", lr=0.1, epochs=1, reg_coef=2.0)
    with pytest.raises(ValueError, match="'optimizer'"):
        op.unlearn_regression(model, data, "ft", lr=0.1, epochs=1, optimizer="lbfgs")


def test_features_reject_bad_values():
    with pytest.raises(ValueError, match="'width' parameter of RandomFeatures must be an int"):
        op.RandomFeatures(0)
    with pytest.raises(ValueError, match="'scale'"):
        op.RandomFeatures(10, scale=math.inf)


def test_plot_fits_draws_one_panel_per_model(setting):
    import matplotlib
    matplotlib.use("Agg")
    data, model, reference = setting
    fig = op.plot_fits(data, {"a": model, "b": reference}, reference=reference, original=model)
    assert len([ax for ax in fig.axes if ax.axison]) == 2
