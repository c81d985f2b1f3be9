"""Tests of MinNorm-OG in the engine: the projection, the class-balanced sample, the
coefficient, the step on a linear model (exact minimum-norm solution), validation, and the
method end to end on digits."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from feasible.experiment import Config, config_hash, run
from feasible.methods import class_balanced_indices, minnorm_coefficient, orthogonal_part
from feasible.unlearn import UnlearnConfig, minnorm_project, output_gradients, relevant_fields

SMOKE = dict(scale="smoke", epochs=2)


pytestmark = pytest.mark.usefixtures("isolated_dirs")


def test_orthogonal_part_by_hand():
    theta = torch.tensor([1.0, 2.0, 3.0])
    basis = torch.tensor([[1.0], [0.0], [0.0]])  # span{e1}
    torch.testing.assert_close(orthogonal_part(theta, basis), torch.tensor([0.0, 2.0, 3.0]))
    basis = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]])  # span{(1, 1, 0), e3}
    torch.testing.assert_close(orthogonal_part(theta, basis), torch.tensor([-0.5, 0.5, 0.0]))


def test_orthogonal_part_is_orthogonal_and_idempotent():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(40, 7, generator=gen, dtype=torch.float64)
    theta = torch.randn(40, generator=gen, dtype=torch.float64)
    perp = orthogonal_part(theta, a)
    assert float((a.T @ perp).abs().max()) < 1e-10  # orthogonal to every column
    torch.testing.assert_close(orthogonal_part(perp, a), perp)  # a projection
    # theta - perp is in the span: the least-squares residual of fitting it by a is 0
    inside = theta - perp
    coef = torch.linalg.lstsq(a, inside.unsqueeze(1)).solution
    torch.testing.assert_close(a @ coef.squeeze(1), inside)


def test_orthogonal_part_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"Got shapes \(3,\) and \(4, 2\)"):
        orthogonal_part(torch.zeros(3), torch.zeros(4, 2))


def test_class_balanced_indices():
    targets = torch.tensor([0] * 30 + [1] * 30 + [2] * 3)
    gen = torch.Generator().manual_seed(0)
    idx = class_balanced_indices(targets, 30, gen)  # 10 per class, class 2 has only 3
    counts = torch.bincount(targets[idx], minlength=3)
    assert counts.tolist() == [10, 10, 3]
    assert len(set(idx.tolist())) == len(idx)
    one = class_balanced_indices(targets, 2, gen)  # fewer than the classes: one each
    assert torch.bincount(targets[one]).tolist() == [1, 1, 1]


def test_coefficient_decays_geometrically():
    assert [minnorm_coefficient(0.5, 0.5, k) for k in range(3)] == [0.5, 0.25, 0.125]


def test_projection_of_a_linear_model_reaches_the_minimum_norm_interpolator():
    """For a linear model f(x) = <theta, x>, the output gradients are the inputs: one full
    projection (coef 1) of an interpolator of the retain data onto their span is the
    minimum-norm interpolator, pinv(X) y (Block et al., the linear case)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 20, generator=gen)
    model = nn.Linear(20, 1, bias=False)
    y = torch.randn(6, generator=gen)
    with torch.no_grad():  # some interpolator: min-norm plus a null-space part
        min_norm = torch.linalg.pinv(x) @ y
        null = orthogonal_part(torch.randn(20, generator=gen), x.T)
        model.weight.copy_((min_norm + 3 * null).unsqueeze(0))
    params = dict(model.named_parameters())
    labels = torch.zeros(6, dtype=torch.long)  # one class: the sample is the whole batch
    minnorm_project(model, params, x, labels, coef=1.0, samples=6,
                    generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(model.weight.detach().squeeze(0), min_norm, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model(x).squeeze(1), y, rtol=1e-4, atol=1e-4)  # still fits


def test_output_gradients_are_the_max_logit_gradients():
    model = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    x = torch.tensor([[2.0, 1.0, 5.0], [0.0, 3.0, 1.0]])  # max logits: row 0, then row 1
    grads = output_gradients(model, dict(model.named_parameters()), x)
    assert grads.shape == (6, 2)
    torch.testing.assert_close(grads[:, 0], torch.tensor([2.0, 1.0, 5.0, 0.0, 0.0, 0.0]))
    torch.testing.assert_close(grads[:, 1], torch.tensor([0.0, 0.0, 0.0, 0.0, 3.0, 1.0]))


@pytest.mark.parametrize("field, value, text", [
    ("minnorm_reg", 1.5, "'minnorm_reg' field of UnlearnConfig must be a float in the "
                         "interval [0, 1]. Got 1.5"),
    ("minnorm_decay", -0.1, "'minnorm_decay'"),
    ("minnorm_samples", 0, "'minnorm_samples' field of UnlearnConfig must be an int >= 1"),
    ("minnorm_every", 0, "'minnorm_every'"),
    ("minnorm_gd_epochs", -1, "'minnorm_gd_epochs' field of UnlearnConfig must be an int >= 0"),
])
def test_bad_values_are_named(field, value, text):
    with pytest.raises(ValueError, match=text.replace("[", r"\[").replace("]", r"\]")):
        UnlearnConfig(method="minnorm_og", **{field: value})


def test_minnorm_takes_no_addon():
    with pytest.raises(ValueError, match="The add-on 'and' does not combine with method "
                                         "'minnorm_og'; it allows 'none'."):
        UnlearnConfig(method="minnorm_og", addon="and")


def test_fields_enter_the_hash_only_for_minnorm():
    fields = relevant_fields(UnlearnConfig(method="minnorm_og"))
    assert {"minnorm_reg", "minnorm_decay", "minnorm_samples"} <= set(fields)
    assert "minnorm_reg" not in relevant_fields(UnlearnConfig(method="ft"))
    assert config_hash(Config(method="ft", **SMOKE)) == config_hash(
        Config(method="ft", minnorm_reg=0.5, **SMOKE))


def test_end_to_end_on_digits(tmp_path):
    config = Config(method="minnorm_og", minnorm_samples=20, **SMOKE)
    record = run(config)
    path = tmp_path / "results" / "smoke" / f"{config_hash(config)}.json"
    assert json.loads(path.read_text())["hash"] == record["hash"]
    assert record["diverged_epoch"] is None
    for key in ("UA", "RA", "TA", "MIA", "avg_gap", "unlearn_wall_time"):
        assert math.isfinite(record["final"][key]), key
    first, second = record["epochs"]
    steps = first["steps"]
    assert first["minnorm_projections"] == steps  # one projection before every step
    assert first["minnorm_coef"] == pytest.approx(0.1 * 0.8 ** (steps - 1))
    assert second["minnorm_coef"] == pytest.approx(0.1 * 0.8 ** (2 * steps - 1))


def test_last_epochs_without_projection():
    record = run(Config(method="minnorm_og", minnorm_gd_epochs=1, minnorm_samples=10, **SMOKE))
    assert record["epochs"][0]["minnorm_projections"] > 0
    assert record["epochs"][1]["minnorm_projections"] == 0
    assert record["epochs"][1]["minnorm_coef"] is None
