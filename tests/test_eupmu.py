"""Tests of EUPMU in the engine: lambda*, the w update, the explicit step's weights, the
configuration fields (validation, hashes), and both forms end to end on digits."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from feasible.experiment import Config, config_hash, run
from feasible.masks import ADDONS
from feasible.methods import METHODS, AdamScalar, eupmu_lambda, eupmu_w_step
from feasible.unlearn import UnlearnConfig, eupmu_weights, relevant_fields

ROOT = Path(__file__).resolve().parents[1]
SMOKE = dict(scale="smoke", epochs=2)


pytestmark = pytest.mark.usefixtures("isolated_dirs")


# --- lambda* -----------------------------------------------------------------------------------

def test_lambda_by_hand():
    # g_r = (1, 0), g_f = (-2, 1): <g_r, g_f> = -2, ||g_r||^2 = 1 -> lambda* = 2 (eps 0)
    assert eupmu_lambda(-2.0, 1.0) == pytest.approx(2.0, rel=1e-7)
    # eps = 0.5 -> (2 - 0.5) / 1 = 1.5; ||g_r||^2 = 4 -> 1.5 / 4
    assert eupmu_lambda(-2.0, 1.0, eps=0.5) == pytest.approx(1.5, rel=1e-7)
    assert eupmu_lambda(-2.0, 4.0, eps=0.5) == pytest.approx(0.375, rel=1e-7)


def test_lambda_clamps_at_zero_when_the_gradients_do_not_conflict():
    assert eupmu_lambda(3.0, 1.0) == 0.0  # aligned: the forget gradient is left alone
    assert eupmu_lambda(-0.2, 1.0, eps=0.5) == 0.0  # conflict within the allowed rate
    assert eupmu_lambda(0.0, 0.0) == 0.0  # no retain gradient


def test_the_surgery_direction_raises_the_retain_loss_at_rate_eps():
    gen = torch.Generator().manual_seed(0)
    g_r, g_f = torch.randn(50, generator=gen), torch.randn(50, generator=gen)
    g_f = g_f - 2 * (g_f @ g_r) / (g_r @ g_r) * g_r - g_r  # make them conflict
    assert g_r @ g_f < 0
    for eps in (0.0, 0.3):
        lam = eupmu_lambda(float(g_r @ g_f), float(g_r @ g_r), eps)
        d = g_f + lam * g_r
        assert float(g_r @ d) == pytest.approx(-eps, abs=1e-4)


# --- the explicit step's weights ---------------------------------------------------------------

def test_eupmu_weights_by_hand():
    g_u = {"w": torch.tensor([-2.0, 1.0])}
    g_c = {"w": torch.tensor([1.0, 0.0])}
    a, b, lam = eupmu_weights(g_u, g_c, 1.0, 1.0, max_norm=0)
    assert (a, b) == pytest.approx((1.0, 2.0)) and lam == pytest.approx(2.0)
    # direction (0, 1), norm 1: the clip at 1 leaves it (up to torch's 1e-6)
    a, b, _ = eupmu_weights(g_u, g_c, 1.0, 1.0, max_norm=1.0)
    assert (a, b) == pytest.approx((1.0, 2.0), rel=1e-5)
    a, b, _ = eupmu_weights(g_u, g_c, 1.0, 1.0, max_norm=0.5)  # clipped to half
    assert (a, b) == pytest.approx((0.5, 1.0), rel=1e-5)


def test_eupmu_weights_use_the_batch_shares():
    """The authors weigh each part's mean loss by its share of the mixed batch: g_f = s_f g_u,
    g_r = s_r g_c, and lambda* is taken on those."""
    g_u = {"w": torch.tensor([-2.0, 1.0])}
    g_c = {"w": torch.tensor([1.0, 0.0])}
    a, b, lam = eupmu_weights(g_u, g_c, 0.25, 0.75, max_norm=0)
    # <g_r, g_f> = 0.75 * 0.25 * (-2) = -0.375; ||g_r||^2 = 0.5625 -> lambda* = 2/3
    assert lam == pytest.approx(0.375 / 0.5625)
    assert (a, b) == pytest.approx((0.25, 0.75 * lam))


def test_eupmu_clip_matches_torch_clip_grad_norm():
    gen = torch.Generator().manual_seed(1)
    g_u = {"a": torch.randn(3, 4, generator=gen), "b": torch.randn(5, generator=gen)}
    g_c = {"a": torch.randn(3, 4, generator=gen), "b": torch.randn(5, generator=gen)}
    a, b, lam = eupmu_weights(g_u, g_c, 1.0, 1.0, max_norm=1.0)
    params = [torch.nn.Parameter(torch.zeros_like(g_u[n])) for n in g_u]
    for p, n in zip(params, g_u):
        p.grad = g_u[n] + lam * g_c[n]
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    for p, n in zip(params, g_u):
        torch.testing.assert_close(p.grad, a * g_u[n] + b * g_c[n], rtol=1e-5, atol=1e-6)


# --- the implicit form's w ---------------------------------------------------------------------

def test_w_step_is_torch_adam_with_weight_decay():
    w = torch.tensor([0.3], requires_grad=True)
    opt = torch.optim.Adam([w], lr=1.0, weight_decay=0.01)
    mine, state = 0.3, AdamScalar()
    for delta in (-0.2, 0.05, -0.4, 0.0, 0.3):
        opt.zero_grad()
        w.grad = torch.tensor([delta])
        opt.step()
        mine, state = eupmu_w_step(mine, delta, state, lr=1.0, weight_decay=0.01)
        assert mine == pytest.approx(w.item(), rel=1e-5, abs=1e-6)
    assert state.t == 5


def test_w_first_step_by_hand():
    # Adam's first step is lr * sign(g) (bias-corrected m / sqrt(v) = g / |g|)
    w, _ = eupmu_w_step(0.0, -0.5, AdamScalar(), lr=1.0, weight_decay=0.0)
    assert w == pytest.approx(1.0, rel=1e-6)  # the retain loss rose: w grows
    w, _ = eupmu_w_step(2.0, 0.5, AdamScalar(), lr=0.1, weight_decay=0.0)
    assert w == pytest.approx(1.9, rel=1e-6)


# --- configuration -----------------------------------------------------------------------------

@pytest.mark.parametrize("field, value, text", [
    ("eupmu_eps", math.nan, "'eupmu_eps' field of UnlearnConfig must be a finite float"),
    ("eupmu_max_norm", -1.0, "'eupmu_max_norm' field of UnlearnConfig must be a finite "
                             "float >= 0 (0: no clip). Got -1.0"),
    ("eupmu_w_lr", 0.0, "'eupmu_w_lr' field of UnlearnConfig must be a finite float > 0"),
    ("eupmu_w_decay", -0.1, "'eupmu_w_decay'"),
    ("eupmu_error", "x", "'eupmu_error'"),
])
def test_bad_values_are_named(field, value, text):
    with pytest.raises(ValueError, match=text.replace("(", r"\(").replace(")", r"\)")):
        UnlearnConfig(method="eupmu", **{field: value})


def test_eupmu_takes_every_addon_and_the_implicit_form_names_its_own():
    for addon in ADDONS:
        UnlearnConfig(method="eupmu", addon=addon)
    with pytest.raises(ValueError, match="The add-on 'prob' does not combine with method "
                                         "'eupmu_implicit'; it allows 'none', 'salun', "
                                         "'salun_step'."):
        UnlearnConfig(method="eupmu_implicit", addon="prob")
    with pytest.raises(ValueError, match="'agg' field of UnlearnConfig must be 'lin'"):
        UnlearnConfig(method="eupmu", agg="min")


def test_fields_enter_the_hash_only_for_their_method():
    assert {"eupmu_eps", "eupmu_max_norm"} <= set(relevant_fields(UnlearnConfig(method="eupmu")))
    assert "eupmu_w_lr" not in relevant_fields(UnlearnConfig(method="eupmu"))
    assert "eupmu_w_lr" in relevant_fields(UnlearnConfig(method="eupmu_implicit"))
    srl = relevant_fields(UnlearnConfig(method="srl"))
    assert not [k for k in srl if k.startswith(("eupmu", "minnorm"))]
    base = Config(method="srl", **SMOKE)
    assert config_hash(base) == config_hash(Config(method="srl", eupmu_eps=0.5, **SMOKE))
    assert config_hash(Config(method="eupmu", **SMOKE)) != config_hash(
        Config(method="eupmu", eupmu_eps=0.5, **SMOKE))


def test_committed_records_keep_their_hashes():
    """The new fields leave every existing configuration's hash as it was: a few committed
    records' configurations hash to their file names."""
    files = sorted((ROOT / "results" / "cpu").glob("*.json"))[:8]
    if not files:
        pytest.skip("no committed cpu records in this checkout")
    for path in files:
        record = json.loads(path.read_text())
        assert config_hash(Config.from_dict(record["config"])) == path.stem, path.name


def test_the_methods_are_declared():
    assert METHODS["eupmu"].rule == "eupmu" and METHODS["eupmu"].batching == "mixed"
    assert METHODS["eupmu_implicit"].addons == ("none", "salun", "salun_step")


# --- end to end on digits ----------------------------------------------------------------------

@pytest.mark.parametrize("method, addon", [("eupmu", "none"), ("eupmu", "and"),
                                           ("eupmu", "prob"), ("eupmu", "focus"),
                                           ("eupmu_implicit", "none")])
def test_end_to_end_on_digits(method, addon, tmp_path):
    config = Config(method=method, addon=addon, **SMOKE)
    record = run(config)
    path = tmp_path / "results" / "smoke" / f"{config_hash(config)}.json"
    assert path.exists() and json.loads(path.read_text())["hash"] == record["hash"]
    assert record["diverged_epoch"] is None and len(record["epochs"]) == 2
    for key in ("UA", "RA", "TA", "MIA", "avg_gap", "rUA", "unlearn_wall_time"):
        assert math.isfinite(record["final"][key]), key
    last = record["epochs"][-1]
    if method == "eupmu":
        assert last["eupmu_lambda"] >= 0 and 0 <= last["eupmu_active_fraction"] <= 1
        assert last["step_norm"] <= 0.3 * 1.0 + 1e-6  # lr times the clipped norm (1)
        if addon in ("and", "prob"):  # a mask on g_f + lambda* g_r
            assert last["kept_fraction"] < 1
        if addon == "focus":  # f = P in [0, 1] weighs each coordinate
            assert last["direction_ratio"] < 1
    else:
        assert math.isfinite(last["eupmu_w"]) and last["eupmu_w"] != 0.0
    assert record["config"]["method"] == method


def test_implicit_form_moves_w_by_the_retain_loss():
    """w starts at w_init and moves by Adam steps of at most about eupmu_w_lr each."""
    config = Config(method="eupmu_implicit", eupmu_w_init=0.5, eupmu_w_lr=0.01, **SMOKE)
    record = run(config)
    steps = sum(e["steps"] for e in record["epochs"])
    assert abs(record["epochs"][-1]["eupmu_w"] - 0.5) <= 0.01 * steps * 1.01
