"""The cost of each add-on: seconds per unlearning step, as a ratio to the plain step."""
from __future__ import annotations

import torch

from feasible._validate import resolve_device
from feasible.masks import ADDONS
from feasible.models import MODELS, build_model
from feasible.unlearn import UnlearnConfig, unlearn

#: The input shape (channels, image size) of each benchmark model, as the scales use it.
SHAPES: dict[str, tuple[int, int]] = {"mlp": (1, 28), "small_cnn": (1, 28), "resnet18": (3, 32),
                                      "vgg16_bn": (3, 32)}


def bench(
    model: str = "small_cnn",
    *,
    method: str = "ngplus",
    addons: tuple[str, ...] = tuple(ADDONS),
    batch_size: int = 128,
    steps: int = 10,
    noise: str = "microbatch",
    k: int = 8,
    width: int | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
) -> list[dict[str, float | str]]:
    """Times ``steps`` unlearning steps of the one loop per add-on, in one run.

    Every add-on runs the same loop (:func:`feasible.unlearn.unlearn`) on the same random data
    and the same model, one after the other, after a warm-up epoch; the ratios to ``"none"``
    are therefore measured side by side, on one machine in one state. SalUn's one-off mask
    at theta0 is reported apart (``setup_s``), not in the step time.

    Args:
        model: a name of :data:`feasible.models.MODELS`.
        method: the base method (its batching decides which gradients ``"none"`` computes).
        addons: the add-ons to time; ``"none"`` is always timed, as the reference.
        batch_size: the batch size, >= 2.
        steps: unlearning steps timed per add-on, >= 1.
        noise: the gradient-noise estimator of PROB and focus.
        k: its number of micro-batches.
        width: the model's width (``None``: its default).
        device: where to compute (``None``: cuda if available, else cpu): ``"cpu"``,
            ``"cuda"``, ``"cuda:N"`` or ``"mps"``, present on this machine.
        seed: seeds the data, the model and the loop.

    Returns:
        One row per add-on, with ``addon``, ``step_s`` (seconds per step), ``ratio`` (to
        ``"none"``) and ``setup_s``.

    Raises:
        ValueError: an unknown model, method or add-on, a bad size, or an unknown or unavailable
            device.
    """
    if model not in MODELS:
        raise ValueError(f"Unknown model {model!r}; expected one of "
                         f"{', '.join(repr(m) for m in MODELS)}.")
    for name in addons:
        if name not in ADDONS:
            raise ValueError(f"Unknown add-on {name!r}; expected one of "
                             f"{', '.join(repr(a) for a in ADDONS)}.")
    for name, value, low in (("batch_size", batch_size, 2), ("steps", steps, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"The '{name}' parameter of bench must be an int >= {low}. "
                             f"Got {value!r} instead.")
    dev = resolve_device(device)
    configs = {a: UnlearnConfig(method=method, addon=a, epochs=1, batch_size=batch_size,
                                noise=noise, k=k, seed=seed, lr=1e-6)
               for a in ("none", *[a for a in addons if a != "none"])}
    channels, size = SHAPES[model]
    gen = torch.Generator().manual_seed(seed)
    n = steps * batch_size  # one epoch of the method = `steps` steps
    sets = [(torch.randint(0, 256, (n, channels, size, size), generator=gen, dtype=torch.uint8)
             .to(dev), torch.randint(0, 10, (n,), generator=gen).to(dev)) for _ in range(2)]
    torch.manual_seed(seed)
    net = build_model(model, in_channels=channels, num_classes=10, image_size=size,
                      mean=(0.5,) * channels, std=(0.25,) * channels, width=width).to(dev)
    theta0 = {name: t.clone() for name, t in net.state_dict().items()}
    unlearn(net, sets[0], sets[1], configs["none"], num_classes=10)  # warm-up
    rows = []
    for addon, cfg in configs.items():
        net.load_state_dict(theta0)
        result = unlearn(net, sets[0], sets[1], cfg, num_classes=10)
        epoch = result.epochs[0]
        rows.append({"addon": addon, "step_s": epoch["wall_time"] / epoch["steps"],
                     "setup_s": result.setup_time})
    for row in rows:
        row["ratio"] = row["step_s"] / rows[0]["step_s"]
    return rows
