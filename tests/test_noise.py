"""Tests of feasible.noise.grad_stats: exactness, estimator agreement, side effects, calibration."""
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from sklearn.datasets import load_digits
from torch import nn

import feasible
from feasible.noise import GradStats


def mlp(seed, hidden=32, dtype=torch.float32):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10)).to(dtype)


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    return torch.tensor(x / 16, dtype=torch.float32), torch.tensor(y)


def batch(digits, n):
    return digits[0][:n], digits[1][:n]


def flat(tree):
    return torch.cat([v.reshape(-1) for v in tree.values()])


def naive_per_sample(model, loss_fn, x, y):
    """One autograd call per sample: the reference for method='per_sample'."""
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for i in range(len(x)):
        loss = loss_fn(model(x[i:i + 1]), y[i:i + 1])
        rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]))
    return torch.stack(rows)


# ------------------------------------------------------------------------------------------
# Exactness against naive computations.
# ------------------------------------------------------------------------------------------


def test_per_sample_matches_a_loop_of_single_sample_gradients(digits):
    x, y = digits[0][:70].double(), digits[1][:70]  # 70 > one vmap chunk of 64: the merge is used
    model = mlp(0, dtype=torch.float64)
    grads = naive_per_sample(model, F.cross_entropy, x, y)
    stats = feasible.grad_stats(model, F.cross_entropy, x, y, method="per_sample")
    assert isinstance(stats, GradStats)
    assert list(stats.mean) == [name for name, _ in model.named_parameters()]
    assert torch.allclose(flat(stats.mean), grads.mean(0), atol=1e-12)
    assert torch.allclose(flat(stats.se), grads.std(0) / len(x) ** 0.5, atol=1e-12)
    assert stats.loss == pytest.approx(F.cross_entropy(model(x), y).item(), rel=1e-12)


@pytest.mark.parametrize("n, k", [(12, 3), (10, 3), (10, 4), (9, 9)])
def test_microbatch_matches_its_formula(digits, n, k):
    x, y = digits[0][:n].double(), digits[1][:n]
    model = mlp(1, dtype=torch.float64)
    params = list(model.parameters())
    chunk_grads, weights = [], []
    for xs, ys in zip(torch.tensor_split(x, k), torch.tensor_split(y, k)):
        loss = F.cross_entropy(model(xs), ys)
        chunk_grads.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]))
        weights.append(len(xs) / n)
    g, w = torch.stack(chunk_grads), torch.tensor(weights, dtype=torch.float64)[:, None]
    mean = (w * g).sum(0)
    se = ((w * (g - mean) ** 2).sum(0) / (k - 1)).sqrt()  # = std(ddof=1)/sqrt(k) for equal chunks
    stats = feasible.grad_stats(model, F.cross_entropy, x, y, k=k)
    assert torch.allclose(flat(stats.mean), mean, atol=1e-12)
    assert torch.allclose(flat(stats.se), se, atol=1e-12)
    # The weighted mean of chunk gradients is the full-batch gradient (no BatchNorm).
    full = torch.autograd.grad(F.cross_entropy(model(x), y), params)
    full = torch.cat([v.reshape(-1) for v in full])
    assert torch.allclose(flat(stats.mean), full, atol=1e-12)
    if n % k == 0:
        assert torch.allclose(flat(stats.se), g.std(0) / k**0.5, atol=1e-12)


def test_microbatch_with_one_sample_per_chunk_is_per_sample(digits):
    x, y = digits[0][:24].double(), digits[1][:24]
    model = mlp(2, dtype=torch.float64)
    a = feasible.grad_stats(model, F.cross_entropy, x, y, k=24)
    b = feasible.grad_stats(model, F.cross_entropy, x, y, method="per_sample")
    assert torch.allclose(flat(a.mean), flat(b.mean), atol=1e-12)
    assert torch.allclose(flat(a.se), flat(b.se), atol=1e-12)
    assert a.loss == pytest.approx(b.loss, rel=1e-12)


# ------------------------------------------------------------------------------------------
# The two estimators agree (measured: median se ratio 0.96-1.00 over seeds 0-4, 10%-90%
# quantiles 0.74-1.19, as expected from a k = 16 variance estimate: sqrt(chi2_15 / 15)).
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_microbatch_and_per_sample_agree_on_a_batch_of_256(digits, seed):
    idx = torch.randperm(len(digits[0]), generator=torch.Generator().manual_seed(seed))[:256]
    x, y = digits[0][idx], digits[1][idx]
    model = mlp(seed)
    micro = feasible.grad_stats(model, F.cross_entropy, x, y, method="microbatch", k=16)
    exact = feasible.grad_stats(model, F.cross_entropy, x, y, method="per_sample")
    assert torch.allclose(flat(micro.mean), flat(exact.mean), atol=1e-6)
    assert micro.loss == pytest.approx(exact.loss, rel=1e-5)
    se_micro, se_exact = flat(micro.se), flat(exact.se)
    assert torch.equal(se_micro > 0, se_exact > 0)  # the same dead coordinates
    ratio = se_micro[se_exact > 0] / se_exact[se_exact > 0]
    assert 0.85 <= ratio.median() <= 1.15
    assert ratio.quantile(0.1) >= 0.6 and ratio.quantile(0.9) <= 1.4


# ------------------------------------------------------------------------------------------
# BatchNorm, dropout, frozen parameters, and the model left as it was found.
# ------------------------------------------------------------------------------------------


def bn_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2),
                         nn.Linear(16, 10))


def snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            [m.training for m in model.modules()],
            [p.grad for p in model.parameters()])


def assert_unchanged(model, before):
    state, modes, grads = before
    after = model.state_dict()
    assert all(torch.equal(state[k], after[k]) for k in state)
    assert [m.training for m in model.modules()] == modes
    assert all(g is None for g in grads) and all(p.grad is None for p in model.parameters())


def test_per_sample_refuses_batchnorm_in_training_mode(digits):
    model = bn_model().train()
    with pytest.raises(ValueError, match=(
        r"BatchNorm module\(s\) "
        r"\['1'\].*model.eval\(\).*method='microbatch'"
    )):
        feasible.grad_stats(model, F.cross_entropy, *batch(digits, 32), method="per_sample")
    untracked = nn.Sequential(nn.Linear(64, 4), nn.BatchNorm1d(4, track_running_stats=False)).eval()
    with pytest.raises(ValueError, match="BatchNorm"):  # batch statistics even in eval mode
        feasible.grad_stats(untracked, F.cross_entropy, *batch(digits, 8), method="per_sample")


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("method", ["microbatch", "per_sample"])
def test_model_is_left_as_found(digits, mode, method):
    model = bn_model()
    model.train() if mode == "train" else model.eval()
    model[4].eval()  # a mixed state must survive too
    if mode == "train" and method == "per_sample":
        model[1].eval()  # per-sample needs BatchNorm in eval mode; dropout stays in training mode
    before = snapshot(model)
    stats = feasible.grad_stats(model, F.cross_entropy, *batch(digits, 32), method=method, k=4)
    assert_unchanged(model, before)
    assert set(stats.mean) == {name for name, _ in model.named_parameters()}
    assert all(torch.isfinite(v).all() and not v.requires_grad for v in stats.se.values())
    assert all(torch.isfinite(v).all() and not v.requires_grad for v in stats.mean.values())


def test_frozen_parameters_are_left_out(digits):
    model = mlp(3)
    model[0].weight.requires_grad_(False)
    for method in ("microbatch", "per_sample"):
        stats = feasible.grad_stats(model, F.cross_entropy, *batch(digits, 16), method=method)
        assert list(stats.mean) == ["0.bias", "2.weight", "2.bias"] == list(stats.se)


def test_works_under_no_grad(digits):
    model = mlp(5)
    plain = feasible.grad_stats(model, F.cross_entropy, *batch(digits, 16), k=4)
    for method in ("microbatch", "per_sample"):
        with torch.no_grad():
            stats = feasible.grad_stats(model, F.cross_entropy, *batch(digits, 16), method=method, k=4)
        assert torch.allclose(flat(stats.mean), flat(plain.mean), atol=1e-6)


def test_gradient_ascent_loss_is_supported(digits):
    model = mlp(4)
    x, y = digits[0][:16], digits[1][:16]
    plain = feasible.grad_stats(model, F.cross_entropy, x, y, k=4)
    ascent = feasible.grad_stats(model, lambda o, t: -F.cross_entropy(o, t), x, y, k=4)
    assert torch.allclose(flat(ascent.mean), -flat(plain.mean))
    assert torch.allclose(flat(ascent.se), flat(plain.se))
    assert ascent.loss == pytest.approx(-plain.loss)


# ------------------------------------------------------------------------------------------
# Validation.
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 0, -3, 2.5, True, "8", 33])
def test_bad_k_is_rejected(digits, k):
    with pytest.raises(ValueError, match=(
        r"The 'k' parameter of grad_stats must be an "
        r"int in the range \[2, 32\]"
    )):
        feasible.grad_stats(mlp(0), F.cross_entropy, digits[0][:32], digits[1][:32], k=k)


def test_other_bad_arguments_are_rejected(digits):
    x, y, model = digits[0][:8], digits[1][:8], mlp(0)
    with pytest.raises(ValueError, match=(
        "Unknown noise estimator 'bootstrap'; expected one "
        "of 'microbatch', 'per_sample'."
    )):
        feasible.grad_stats(model, F.cross_entropy, x, y, method="bootstrap")
    with pytest.raises(ValueError, match="same batch size. Got 8 and 7 instead"):
        feasible.grad_stats(model, F.cross_entropy, x, y[:7])
    with pytest.raises(ValueError, match="at least 2 samples"):
        feasible.grad_stats(model, F.cross_entropy, x[:1], y[:1], method="per_sample")
    per_sample_loss = lambda o, t: F.cross_entropy(o, t, reduction="none")  # noqa: E731
    for method in ("microbatch", "per_sample"):
        with pytest.raises(ValueError, match=(
            "'loss_fn' argument of grad_stats "
            "must return a scalar"
        )):
            feasible.grad_stats(model, per_sample_loss, x, y, method=method, k=2)
    with pytest.raises(TypeError, match="'inputs' argument of grad_stats must be a torch.Tensor"):
        feasible.grad_stats(model, F.cross_entropy, x.numpy(), y)
    with pytest.raises(TypeError, match="'model' argument of grad_stats must be a torch.nn.Module"):
        feasible.grad_stats(lambda v: v, F.cross_entropy, x, y)


# ------------------------------------------------------------------------------------------
# Calibration on real data (THEORY.md section 8). Digits, MLP 64-32-10 trained 5 epochs
# (SGD 0.1, momentum 0.9, batch 32, seed 0; about 97% training accuracy). phi from batches of
# 64 (8 disjoint batches, pooled), against the sign of the full-data CE gradient. Coordinates
# with se = 0 (no information) or a zero full-data gradient are left out. Measured with seed 0:
# ECE 0.136 (per_sample) and 0.141 (microbatch, k = 8); seeds 0-3 range 0.075-0.172; share
# positive by phi-decile [0.15, 0.25, 0.44, 0.48, 0.49, 0.54, 0.54, 0.54, 0.60, 0.85], Spearman
# 0.95. The Gaussian is over-confident: the extreme deciles are less extreme than phi says.
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(digits):
    x, y = digits
    model = mlp(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 32):
            opt.zero_grad()
            F.cross_entropy(model(x[perm[i:i + 32]]), y[perm[i:i + 32]]).backward()
            opt.step()
    opt.zero_grad(set_to_none=True)
    full = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    return model, torch.cat([g.reshape(-1) for g in full]), torch.randperm(len(x), generator=gen)


def calibration(model, full, order, digits, method):
    x, y = digits
    phis, positive = [], []
    for b in range(8):
        idx = order[64 * b:64 * (b + 1)]
        stats = feasible.grad_stats(model, F.cross_entropy, x[idx], y[idx], method=method, k=8)
        mean, se = flat(stats.mean), flat(stats.se)
        informative = (se > 0) & (full != 0)
        phis.append(feasible.phi(mean, se)[informative])
        positive.append((full[informative] > 0).double())
    phi, positive = torch.cat(phis).double(), torch.cat(positive)
    bins = (phi * 10).long().clamp(max=9)
    shares, error = [], 0.0
    for b in range(10):
        in_bin = bins == b
        shares.append(positive[in_bin].mean().item())
        error += in_bin.sum().item() * abs(shares[-1] - phi[in_bin].mean().item())
    return shares, error / len(phi), phi, bins


@pytest.mark.parametrize("method", ["per_sample", "microbatch"])
def test_phi_is_calibrated_within_the_measured_bound(digits, trained, method):
    model, full, order = trained
    shares, ece, phi, bins = calibration(model, full, order, digits, method)
    assert min((bins == b).sum().item() for b in range(10)) >= 100  # every decile populated
    assert spearmanr(range(10), shares)[0] >= 0.9  # the share positive increases with phi
    assert shares[9] - shares[0] >= 0.5
    assert shares[0] < 0.5 < shares[9]
    assert ece <= 0.2  # measured 0.136 / 0.141
    # Over-confident, as THEORY.md section 8 reports on a CNN: the extremes are pulled inwards.
    assert shares[0] > phi[bins == 0].mean() and shares[9] < phi[bins == 9].mean()
