"""The fast paths against slow references: the one-backward-pass micro-batch and per-sample
estimators against the loop of chunks and torch.func per-sample gradients (``fast=False``);
the per-tensor quantile by selection against the full sort; the in-place centred phi against
its two-branch form. Nothing here times anything (the bench does)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import feasible
from feasible.models import build_model
from feasible import masks
from feasible.noise import _chunk_gradients, _fast_layers, per_sample_chunks


def small(name, width):
    torch.manual_seed(0)
    ch, size = (1, 12) if name in ("small_cnn", "mlp") else (3, 16)
    net = build_model(name, in_channels=ch, num_classes=5, image_size=size,
                      mean=(0.5,) * ch, std=(0.25,) * ch, width=width).double()
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (24, ch, size, size), generator=gen, dtype=torch.uint8)
    return net, x, torch.randint(0, 5, (24,), generator=gen)


def close(a, b, rtol=1e-9):
    for name in b:
        scale = b[name].abs().max().clamp_min(1e-30)
        assert (a[name] - b[name]).abs().max() <= rtol * scale, name


@pytest.mark.parametrize("name, width", [("mlp", 16), ("small_cnn", 4), ("resnet18", 2),
                                         ("vgg16_bn", 2)])
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("k", [8, 5])  # 5 does not divide 24: unequal chunks
def test_fast_microbatch_equals_the_loop_of_chunks(name, width, mode, k):
    net, x, y = small(name, width)
    getattr(net, mode)()
    assert _fast_layers(net) is not None  # the fast path applies to every model of the library
    before = {n: b.clone() for n, b in net.named_buffers()}
    fast = feasible.grad_stats(net, F.cross_entropy, x, y, k=k)
    slow = feasible.grad_stats(net, F.cross_entropy, x, y, k=k, fast=False)
    close(fast.mean, slow.mean)
    close(fast.se, slow.se)
    assert fast.loss == pytest.approx(slow.loss, rel=1e-12)
    assert all(torch.equal(b, before[n]) for n, b in net.named_buffers())  # buffers restored
    assert net.training == (mode == "train")
    assert all(p.grad is None for p in net.parameters())


@pytest.mark.parametrize("name, width", [("mlp", 16), ("small_cnn", 4), ("resnet18", 2)])
def test_chunks_of_one_sample_are_torch_func_per_sample_gradients(name, width):
    net, x, y = small(name, width)
    net.eval()  # per-sample gradients exist without batch statistics
    n = len(y)
    chunks, loss, weights = _chunk_gradients(net, F.cross_entropy, x, y, [1] * n)
    ref = {}
    for grads, _ in per_sample_chunks(net, F.cross_entropy, x, y):
        for p, g in grads.items():
            ref.setdefault(p, []).append(g)
    ref = {p: torch.cat(g) for p, g in ref.items()}
    close({p: c * n for p, c in chunks.items()}, ref)  # w_j = 1/n
    assert float(loss) == pytest.approx(F.cross_entropy(net(x), y).item(), rel=1e-12)


def test_fast_microbatch_takes_any_chunkwise_loss():
    net, x, y = small("small_cnn", 4)

    def neg_ce_sum(out, t):  # not a mean: the chunk loss itself is what is weighted
        return -F.cross_entropy(out, t, reduction="sum")

    fast = feasible.grad_stats(net, neg_ce_sum, x, y, k=4)
    slow = feasible.grad_stats(net, neg_ce_sum, x, y, k=4, fast=False)
    close(fast.mean, slow.mean)
    close(fast.se, slow.se)


def test_frozen_parameters_and_unknown_layers():
    net, x, y = small("small_cnn", 4)
    net.conv1.weight.requires_grad_(False)
    fast = feasible.grad_stats(net, F.cross_entropy, x, y, k=4)
    slow = feasible.grad_stats(net, F.cross_entropy, x, y, k=4, fast=False)
    assert "conv1.weight" not in fast.mean
    close(fast.se, slow.se)

    class Scale(nn.Module):  # a parameterised layer the fast path does not read: the loop runs
        def __init__(self):
            super().__init__()
            self.s = nn.Parameter(torch.ones(1, dtype=torch.float64))

        def forward(self, z):
            return z * self.s

    other = nn.Sequential(net, Scale())
    assert _fast_layers(other) is None
    fast = feasible.grad_stats(other, F.cross_entropy, x, y, k=4)
    slow = feasible.grad_stats(other, F.cross_entropy, x, y, k=4, fast=False)
    close(fast.se, slow.se)


def test_a_layer_called_twice_falls_back_to_the_loop():
    torch.manual_seed(0)
    lin = nn.Linear(6, 6).double()
    net = nn.Sequential(lin, nn.Tanh(), lin)
    x, y = torch.randn(12, 6, dtype=torch.float64), torch.randint(0, 6, (12,))
    fast = feasible.grad_stats(net, F.cross_entropy, x, y, k=3)
    slow = feasible.grad_stats(net, F.cross_entropy, x, y, k=3, fast=False)
    close(fast.mean, slow.mean)
    close(fast.se, slow.se)


def test_float32_agrees_within_float_tolerance():
    net, x, y = small("resnet18", 2)
    net.float()
    fast = feasible.grad_stats(net, F.cross_entropy, x, y, k=6)
    slow = feasible.grad_stats(net, F.cross_entropy, x, y, k=6, fast=False)
    close(fast.mean, slow.mean, rtol=1e-4)
    close(fast.se, slow.se, rtol=1e-4)


@pytest.mark.parametrize("name, width", [("mlp", 16), ("small_cnn", 4), ("resnet18", 2),
                                         ("vgg16_bn", 2)])
def test_fast_per_sample_equals_torch_func(name, width):
    net, x, y = small(name, width)
    net.eval()  # BatchNorm with running statistics: samples do not interact
    x = torch.cat([x, x[:50]])  # 74 samples: more than one chunk of 64 is merged
    y = torch.cat([y, y[:50]])
    fast = feasible.grad_stats(net, F.cross_entropy, x, y, method="per_sample")
    slow = feasible.grad_stats(net, F.cross_entropy, x, y, method="per_sample", fast=False)
    assert list(fast.mean) == list(slow.mean)
    close(fast.mean, slow.mean)
    close(fast.se, slow.se)
    assert fast.loss == pytest.approx(slow.loss, rel=1e-12)


def test_fast_per_sample_in_float32_and_with_a_sequence_input():
    net, x, y = small("small_cnn", 4)
    net.float()
    fast = feasible.grad_stats(net, F.cross_entropy, x, y, method="per_sample")
    slow = feasible.grad_stats(net, F.cross_entropy, x, y, method="per_sample", fast=False)
    close(fast.se, slow.se, rtol=1e-4)
    torch.manual_seed(0)  # a Linear layer on 3-D inputs forms its per-sample gradients
    seq = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Flatten(), nn.Linear(15, 3)).double()
    xs, ys = torch.randn(20, 3, 4, dtype=torch.float64), torch.randint(0, 3, (20,))
    fast = feasible.grad_stats(seq, F.cross_entropy, xs, ys, method="per_sample")
    slow = feasible.grad_stats(seq, F.cross_entropy, xs, ys, method="per_sample", fast=False)
    close(fast.mean, slow.mean)
    close(fast.se, slow.se)


@pytest.mark.parametrize("how", masks.QUANTILE_SELECTIONS)
@pytest.mark.parametrize("n", [1, 2, 3, 10, 101, 4096])
@pytest.mark.parametrize("q", [0.0, 0.3, 0.5, 0.55, 0.9, 1.0])
def test_every_quantile_selection_gives_the_sorted_midpoint(how, n, q):
    x = torch.randn(n, generator=torch.Generator().manual_seed(n)).abs()
    x[: n // 3] = x[n // 2]  # ties
    ordered = torch.sort(x).values
    low, high = masks._midpoint_ranks(n, q)
    expected = torch.lerp(ordered[low], ordered[high], 0.5)
    assert torch.equal(masks._quantile_threshold(x, q, how), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_centred_phi_in_place_equals_its_two_branch_form(dtype):
    gen = torch.Generator().manual_seed(0)
    g = torch.randn(5000, generator=gen, dtype=dtype) * torch.rand(5000, generator=gen,
                                                                      dtype=dtype) ** 8
    g[::7] = 0
    se = torch.rand(5000, generator=gen, dtype=dtype)
    se[::5] = 0
    se[::11] = torch.finfo(dtype).tiny
    positive = se > 0
    z = g / torch.where(positive, se, torch.ones_like(se))
    reference = torch.where(positive, 0.5 * torch.erf(z * masks._SQRT_HALF), 0.5 * torch.sign(g))
    assert torch.equal(masks._centred_phi(g, se), reference)


def test_dropout_in_training_mode_keeps_the_loop_and_batchnorm1d_is_read():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.3),
                        nn.Linear(8, 3)).double()
    assert _fast_layers(net) is None  # other dropout masks than the loop's: not exact
    net[3].eval()
    assert _fast_layers(net) is not None
    x, y = torch.randn(16, 6, dtype=torch.float64), torch.randint(0, 3, (16,))
    for mode in ("train", "eval"):
        net[1].train(mode == "train")
        methods = ["microbatch"] + (["per_sample"] if mode == "eval" else [])
        for method in methods:
            fast = feasible.grad_stats(net, F.cross_entropy, x, y, method=method, k=4)
            slow = feasible.grad_stats(net, F.cross_entropy, x, y, method=method, k=4,
                                       fast=False)
            close(fast.mean, slow.mean)
            close(fast.se, slow.se)
