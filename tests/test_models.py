"""Tests for feasible.models: shapes, the built-in normaliser, parameter counts, validation."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from feasible.models import MODELS, Normalize, build_model

SHAPES = [(1, 28), (3, 32), (1, 8)]        # Fashion-MNIST, CIFAR-10/SVHN, digits


def make(name: str, channels: int = 3, size: int = 32, classes: int = 10, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return build_model(name, in_channels=channels, num_classes=classes, image_size=size,
                       mean=[0.5] * channels, std=[0.25] * channels, **kwargs)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("channels, size", SHAPES)
@pytest.mark.parametrize("name", MODELS)
def test_forward_backward(name, channels, size):
    model = make(name, channels, size, classes=7)
    x = torch.randint(0, 256, (3, channels, size, size), dtype=torch.uint8)
    out = model(x)
    assert out.shape == (3, 7) and out.dtype == torch.float32
    out.logsumexp(dim=1).sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", MODELS)
def test_uint8_and_float_inputs_agree(name):
    model = make(name, 1, 28).eval()
    x = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    torch.testing.assert_close(model(x), model(x.float() / 255))


def test_normalize_math_and_buffers():
    norm = Normalize([0.1, 0.2, 0.3], [0.5, 0.25, 2.0])
    x = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    mean = torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)
    std = torch.tensor([0.5, 0.25, 2.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(norm(x), (x.float() / 255 - mean) / std)
    assert {name for name, _ in norm.named_buffers()} == {"mean", "std"}
    assert list(norm.parameters()) == []
    with pytest.raises(TypeError, match="uint8 or floating"):
        norm(x.long())


@pytest.mark.parametrize("name", MODELS)
def test_normaliser_is_first_moves_with_the_model_and_is_saved(name):
    model = make(name)
    assert isinstance(model[0], Normalize)
    state = model.state_dict()
    assert torch.equal(state["normalize.mean"].flatten(), torch.full((3,), 0.5))
    assert torch.equal(state["normalize.std"].flatten(), torch.full((3,), 0.25))
    other = build_model(name, in_channels=3, num_classes=10, image_size=32, mean=[0.1] * 3, std=[0.9] * 3)
    other.load_state_dict(state)                  # a checkpoint carries its normaliser
    assert torch.equal(other[0].std, torch.full((1, 3, 1, 1), 0.25))
    model.to(torch.float64)
    assert model[0].mean.dtype == torch.float64
    model.to("meta")                              # stands in for a GPU: buffers follow .to()
    assert model[0].mean.device.type == "meta" and model[0].std.device.type == "meta"


def test_parameter_counts():
    assert n_params(make("resnet18", 3, 32)) == 11_173_962            # the CIFAR ResNet18
    vgg = make("vgg16_bn", 3, 32)
    assert vgg.classifier[0].in_features == 2048                       # 512 x 2 x 2
    assert [m.out_features for m in vgg.classifier if isinstance(m, nn.Linear)] == [256, 256, 10]
    assert 14_500_000 < n_params(vgg) < 15_500_000
    # small CNN at 1x28x28: 1*32*9+32 + 32*64*9+64 + 64*7*7*128+128 + 128*10+10
    assert n_params(make("small_cnn", 1, 28)) == 320 + 18_496 + 401_536 + 1_290
    # MLP at 1x28x28: 784*256+256 + 256*256+256 + 256*10+10
    assert n_params(make("mlp", 1, 28)) == 200_960 + 65_792 + 2_570


def test_resnet18_cifar_stem_and_width():
    model = make("resnet18", 3, 32)
    stem = model.stem[0]
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [2, 2, 2, 2]
    assert model.fc.in_features == 512
    narrow = make("resnet18", 3, 32, width=16)
    assert narrow.fc.in_features == 128 and narrow.stem[0].out_channels == 16
    assert n_params(narrow) < n_params(model) / 10


@pytest.mark.parametrize("size, pools", [(32, 4), (28, 3), (16, 3), (8, 2)])
def test_vgg_skips_pools_on_small_inputs(size, pools):
    model = make("vgg16_bn", 1, size)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.features) == pools
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13 and convs[-1].out_channels == 512
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.features) == 13
    feature_map = model.features(torch.zeros(1, 1, size, size))
    assert min(feature_map.shape[-2:]) >= 2


@pytest.mark.parametrize("name", ["small_cnn", "mlp"])
def test_no_batchnorm_and_per_sample_gradients(name):
    model = make(name, 1, 28)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())
    x = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    y = torch.randint(0, 10, (5,))

    def loss(p, xi, yi):
        out = torch.func.functional_call(model, (p, buffers), (xi[None],))
        return nn.functional.cross_entropy(out, yi[None])

    per_sample = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0))(params, x, y)
    first = torch.func.grad(loss)(params, x[0], y[0])
    for k in params:
        assert per_sample[k].shape == (5, *params[k].shape)
        torch.testing.assert_close(per_sample[k][0], first[k])


def test_small_cnn_and_mlp_width():
    cnn = make("small_cnn", 1, 28, width=8)
    assert cnn.conv1.out_channels == 8 and cnn.conv2.out_channels == 16
    assert make("mlp", 1, 28, width=32).fc1.out_features == 32


def test_initialisation_follows_the_global_seed():
    a, b = make("small_cnn"), make("small_cnn")
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "resnet"}, "Unknown model 'resnet'; expected one of 'resnet18', 'vgg16_bn', 'small_cnn', 'mlp'"),
        ({"in_channels": 0}, "'in_channels' parameter of build_model must be an int >= 1. Got 0"),
        ({"num_classes": 1}, "'num_classes' parameter of build_model must be an int >= 2. Got 1"),
        ({"image_size": 4}, "'image_size' parameter of build_model must be an int >= 8 for model 'resnet18'"),
        ({"image_size": 32.0}, "'image_size'"),
        ({"mean": [0.5, 0.5]}, "'mean' parameter of build_model must be a sequence of 3 finite floats"),
        ({"std": [0.2, 0.0, 0.2]}, "'std' parameter of build_model must hold floats > 0"),
        ({"std": [0.2, float("nan"), 0.2]}, "'std'"),
        ({"width": 0}, "'width' parameter of build_model must be an int >= 1. Got 0"),
        ({"width": 1.5}, "'width'"),
    ],
)
def test_build_model_rejects_bad_values(kwargs, message):
    args = dict(name="resnet18", in_channels=3, num_classes=10, image_size=32, mean=[0.5] * 3, std=[0.2] * 3)
    args.update(kwargs)
    name = args.pop("name")
    with pytest.raises(ValueError, match=message):
        build_model(name, **args)


def test_small_sizes_are_accepted_where_they_make_sense():
    assert make("small_cnn", 1, 4)(torch.zeros(2, 1, 4, 4)).shape == (2, 10)
    assert make("mlp", 1, 1)(torch.zeros(2, 1, 1, 1)).shape == (2, 10)
    with pytest.raises(ValueError, match="'image_size'"):
        make("small_cnn", 1, 3)
