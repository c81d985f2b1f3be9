"""Image classifiers that normalise their input: ResNet18, VGG16-BN, a small CNN, an MLP."""
from __future__ import annotations

import math
from collections import OrderedDict
from numbers import Integral, Real
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

#: The models :func:`build_model` knows, by name.
MODELS: tuple[str, ...] = ("resnet18", "vgg16_bn", "small_cnn", "mlp")

#: What ``width=None`` means for each model: the base channel count of ResNet18 (stages
#: ``width * (1, 2, 4, 8)``) and VGG16-BN (``width * (1, 2, 4, 8, 8)``), the first conv's
#: channels of the small CNN (the second has ``2 * width``), the hidden units of the MLP.
DEFAULT_WIDTH: dict[str, int] = {"resnet18": 64, "vgg16_bn": 64, "small_cnn": 32, "mlp": 256}

#: The smallest ``image_size`` each model accepts.
MIN_IMAGE_SIZE: dict[str, int] = {"resnet18": 8, "vgg16_bn": 8, "small_cnn": 4, "mlp": 1}

#: Hidden units of the small CNN's first fully connected layer.
SMALL_CNN_HIDDEN = 128

#: VGG16 (configuration "D") as in SalUn's code: 13 conv layers in five stages, with a
#: max-pool after each of the first four stages only, so that 32x32 inputs leave a 2x2 map.
#: Numbers are multiples of ``width``.
_VGG16_STAGES: tuple[tuple[int, int], ...] = ((1, 2), (2, 2), (4, 3), (8, 3), (8, 3))
_VGG_POOLS = 4
_VGG_HIDDEN = 256


class Normalize(nn.Module):
    """Per-channel normalisation as the first layer: ``(x - mean) / std``.

    Takes uint8 images (divided by 255 first) or floating images in ``[0, 1]``. ``mean`` and
    ``std`` are buffers of shape ``(1, C, 1, 1)``: they move with ``.to(device)`` and are
    saved in the ``state_dict``.

    Args:
        mean: Per-channel mean in ``[0, 1]`` units.
        std: Per-channel standard deviation, each > 0.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([float(m) for m in mean]).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor([float(s) for s in std]).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise a batch ``(B, C, H, W)``."""
        if x.dtype == torch.uint8:
            x = x.to(self.mean.dtype) / 255.0
        elif not x.is_floating_point():
            raise TypeError(f"Normalize takes uint8 or floating images. Got {x.dtype} instead.")
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        """The statistics, for ``print(model)``."""
        mean = ", ".join(f"{m:.4f}" for m in self.mean.flatten().tolist())
        std = ", ".join(f"{s:.4f}" for s in self.std.flatten().tolist())
        return f"mean=({mean}), std=({std})"


class BasicBlock(nn.Module):
    """ResNet's basic block: two 3x3 conv-BN layers and a (projected when needed) shortcut.

    Args:
        in_channels: Channels in.
        out_channels: Channels out.
        stride: Stride of the first conv and of the shortcut's 1x1 projection.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def build_model(
    name: str,
    *,
    in_channels: int,
    num_classes: int,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    width: int | None = None,
) -> nn.Module:
    """Build an image classifier whose first module normalises its input.

    Every model is an ``nn.Sequential`` whose first module (``model[0]``, named
    ``normalize``) is a :class:`Normalize`, so it takes uint8 images straight from
    :mod:`feasible.data`. Weights come from torch's global random generator: call
    ``torch.manual_seed`` first for a reproducible initialisation.

    - ``resnet18``: the CIFAR stem (3x3 conv, stride 1, no max-pool), BasicBlocks
      ``[2, 2, 2, 2]`` with ``width * (1, 2, 4, 8)`` channels (64..512 by default), strides
      ``1, 2, 2, 2``, global average pool, one linear layer. About 11.2M parameters at
      3x32x32 with 10 classes. Convs use Kaiming-normal (fan-out) initialisation.
    - ``vgg16_bn``: the 13 conv-BN-ReLU layers of VGG16 and SalUn's small head: adaptive
      average pool to 2x2, then ``2048-256-256-classes`` (``8 * width * 4`` inputs). As in
      SalUn's code there are four max-pools, so 32x32 inputs leave a 2x2 map. A max-pool is
      skipped when the map entering it is smaller than 4x4, so smaller inputs still run
      (28x28: three pools, a 3x3 map; 8x8: two pools). Initialisation as SalUn's (Kaiming
      fan-out convs, linear weights drawn from N(0, 0.01^2)).
    - ``small_cnn``: two 3x3 conv layers (``width`` and ``2 * width`` channels, 32 and 64 by
      default) each with ReLU and 2x2 max-pool, then ``128`` hidden units and the classes.
      About 0.42M parameters at 1x28x28. No BatchNorm, so per-sample gradients are exact.
    - ``mlp``: flatten, two hidden layers of ``width`` units (256 by default) with ReLU, then
      the classes. No BatchNorm.

    References:
        The paper's models (ResNet18 and VGG16-BN, as in SalUn's protocol); SalUn's
        ``models/VGG.py`` and ``models/ResNet.py`` (OPTML-Group/Unlearn-Saliency) for the VGG
        head and the stem.

    Args:
        name: One of ``MODELS``.
        in_channels: Image channels, an int >= 1.
        num_classes: An int >= 2.
        image_size: Height (= width) of the images, an int >= ``MIN_IMAGE_SIZE[name]``.
        mean: ``in_channels`` per-channel means in ``[0, 1]`` units (e.g. ``ImageData.mean``).
        std: ``in_channels`` per-channel standard deviations, each > 0.
        width: None for ``DEFAULT_WIDTH[name]``, or an int >= 1 (see ``DEFAULT_WIDTH``).

    Returns:
        The model, in training mode, on the CPU, in float32.

    Raises:
        ValueError: For an unknown name or a bad size, ``mean``, ``std`` or ``width``.
    """
    if name not in MODELS:
        options = ", ".join(repr(m) for m in MODELS)
        raise ValueError(f"Unknown model {name!r}; expected one of {options}.")
    _check_int("in_channels", in_channels, 1)
    _check_int("num_classes", num_classes, 2)
    _check_int("image_size", image_size, MIN_IMAGE_SIZE[name], f" for model {name!r}")
    for field, values in (("mean", mean), ("std", std)):
        ok = (
            isinstance(values, Sequence)
            and len(values) == in_channels
            and all(_is_finite_real(v) for v in values)
        )
        if not ok:
            raise ValueError(
                f"The {field!r} parameter of build_model must be a sequence of {in_channels} "
                f"finite floats (one per channel). Got {values!r} instead."
            )
    if any(s <= 0 for s in std):
        raise ValueError(
            f"The 'std' parameter of build_model must hold floats > 0. Got {std!r} instead."
        )
    if width is not None:
        _check_int("width", width, 1)
    width = DEFAULT_WIDTH[name] if width is None else int(width)
    layers = _BUILDERS[name](int(in_channels), int(num_classes), int(image_size), width)
    return nn.Sequential(OrderedDict([("normalize", Normalize(mean, std))] + layers))


def _check_int(field: str, value: object, low: int, where: str = "") -> None:
    if not isinstance(value, Integral) or isinstance(value, bool) or value < low:
        raise ValueError(
            f"The {field!r} parameter of build_model must be an int >= {low}{where}. "
            f"Got {value!r} instead."
        )


def _is_finite_real(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def _kaiming(modules: nn.Module, linear_std: float | None) -> None:
    """Kaiming-normal (fan-out) convs, unit BatchNorm; linear weights N(0, std^2) if given."""
    for m in modules.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear_std is not None:
            nn.init.normal_(m.weight, 0.0, linear_std)
            nn.init.zeros_(m.bias)


_Layers = list[tuple[str, nn.Module]]


def _resnet18(in_channels: int, num_classes: int, image_size: int, width: int) -> _Layers:
    del image_size  # global average pooling: any size >= 8 works
    widths = [width * k for k in (1, 2, 4, 8)]
    layers: _Layers = [(
        "stem",
        nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        ),
    )]
    channels = width
    for i, (out, stride) in enumerate(zip(widths, (1, 2, 2, 2)), start=1):
        blocks = nn.Sequential(BasicBlock(channels, out, stride), BasicBlock(out, out, 1))
        layers.append((f"layer{i}", blocks))
        channels = out
    layers += [
        ("pool", nn.AdaptiveAvgPool2d(1)),
        ("flatten", nn.Flatten()),
        ("fc", nn.Linear(channels, num_classes)),
    ]
    for _, module in layers:
        _kaiming(module, linear_std=None)
    return layers


def _vgg16_bn(in_channels: int, num_classes: int, image_size: int, width: int) -> _Layers:
    features: list[nn.Module] = []
    channels, size, pools = in_channels, image_size, 0
    for multiple, convs in _VGG16_STAGES:
        for _ in range(convs):
            out = width * multiple
            conv = nn.Conv2d(channels, out, 3, padding=1, bias=False)
            features += [conv, nn.BatchNorm2d(out), nn.ReLU()]
            channels = out
        if pools < _VGG_POOLS and size >= 4:   # skip a pool that would leave a map under 2x2
            features.append(nn.MaxPool2d(2, 2))
            size, pools = size // 2, pools + 1
    classifier = nn.Sequential(
        nn.Linear(channels * 2 * 2, _VGG_HIDDEN),
        nn.ReLU(),
        nn.Linear(_VGG_HIDDEN, _VGG_HIDDEN),
        nn.ReLU(),
        nn.Linear(_VGG_HIDDEN, num_classes),
    )
    layers: _Layers = [
        ("features", nn.Sequential(*features)),
        ("pool", nn.AdaptiveAvgPool2d(2)),
        ("flatten", nn.Flatten()),
        ("classifier", classifier),
    ]
    for _, module in layers:
        _kaiming(module, linear_std=0.01)
    return layers


def _small_cnn(in_channels: int, num_classes: int, image_size: int, width: int) -> _Layers:
    side = image_size // 2 // 2
    return [
        ("conv1", nn.Conv2d(in_channels, width, 3, padding=1)),
        ("relu1", nn.ReLU()),
        ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(width, 2 * width, 3, padding=1)),
        ("relu2", nn.ReLU()),
        ("pool2", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(2 * width * side * side, SMALL_CNN_HIDDEN)),
        ("relu3", nn.ReLU()),
        ("fc2", nn.Linear(SMALL_CNN_HIDDEN, num_classes)),
    ]


def _mlp(in_channels: int, num_classes: int, image_size: int, width: int) -> _Layers:
    return [
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(in_channels * image_size * image_size, width)),
        ("relu1", nn.ReLU()),
        ("fc2", nn.Linear(width, width)),
        ("relu2", nn.ReLU()),
        ("fc3", nn.Linear(width, num_classes)),
    ]


_BUILDERS = {"resnet18": _resnet18, "vgg16_bn": _vgg16_bn, "small_cnn": _small_cnn, "mlp": _mlp}
