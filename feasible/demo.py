"""A small real unlearning problem in seconds: a network trained on scikit-learn's digits.

The book's theory pages and the five-minute tour check each statement on a real network in
seconds: :func:`digits_problem` trains a small MLP on the digits until it memorises its training
set, with the engine's own training loop (:func:`feasible.train.train`, a constant learning rate,
no weight decay or augmentation), and splits that set into a forget set and a retain set.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from feasible import data
from feasible.train import TrainConfig, train
from feasible.metrics import accuracy

Batch = tuple[Tensor, Tensor]


@dataclass(frozen=True)
class DigitsProblem:
    """A trained model and the sets of an unlearning problem (all tensors on the CPU)."""

    model: nn.Module
    forget: Batch
    retain: Batch
    test: Batch
    train_accuracy: float
    test_accuracy: float


def neg_ce(outputs: Tensor, targets: Tensor) -> Tensor:
    """The gradient-ascent unlearning loss ``L_U = -CE`` (GA, and the forget term of NGPlus)."""
    return -F.cross_entropy(outputs, targets)


def ce(outputs: Tensor, targets: Tensor) -> Tensor:
    """The utility loss ``L_C = CE``."""
    return F.cross_entropy(outputs, targets)


def digits_problem(
    *,
    seed: int = 0,
    forget_fraction: float = 0.1,
    forget_class: int | None = None,
    model: str = "mlp",
    width: int = 64,
    epochs: int = 60,
    lr: float = 0.1,
    batch_size: int = 64,
) -> DigitsProblem:
    """Train a small network on the digits to memorisation and split off a forget set.

    Args:
        seed: seeds the split, the initialisation and the batch order.
        forget_fraction: share of the training set to forget, in (0, 1), drawn at random.
        forget_class: forget every training image of this class instead (class-wise
            forgetting; the class is then also dropped from the test set).
        model: a name of :data:`feasible.models.MODELS` ("mlp" or "small_cnn" suit 8x8 images).
        width: the model's width.
        epochs: training epochs (SGD with momentum 0.9).
        lr: the learning rate.
        batch_size: the training batch size.

    Returns:
        The trained model (in eval mode) and the forget, retain and test sets.
    """
    digits = data.load("digits", seed=seed)
    if forget_class is None:
        split = data.forget_split(digits, "random", fraction=forget_fraction, seed=seed)
    else:
        split = data.forget_split(digits, "class", cls=forget_class, seed=seed)
    recipe = TrainConfig(model, width=width, epochs=epochs, lr=lr, momentum=0.9, weight_decay=0.0,
                         batch_size=batch_size, schedule="constant", augment=False, seed=seed)
    net, _ = train(digits, torch.arange(len(digits.y_train)), recipe)  # the engine's training loop
    x, y = digits.x_train, digits.y_train
    return DigitsProblem(
        model=net,
        forget=(x[split.forget_idx], y[split.forget_idx]),
        retain=(x[split.retain_idx], y[split.retain_idx]),
        test=(digits.x_test[split.test_keep], digits.y_test[split.test_keep]),
        train_accuracy=accuracy(net, x, y),
        test_accuracy=accuracy(net, digits.x_test[split.test_keep], digits.y_test[split.test_keep]),
    )


def full_gradient(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], batch: Batch) -> dict[str, Tensor]:
    """The gradient of ``loss_fn`` over a whole set, one tensor per named parameter."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    grads = torch.autograd.grad(loss_fn(model(batch[0]), batch[1]), list(params.values()))
    return {n: g.detach() for n, g in zip(params, grads)}


def flatten(tree: dict[str, Tensor]) -> Tensor:
    """Concatenate a dict of tensors into one flat vector (in the dict's order)."""
    return torch.cat([t.reshape(-1) for t in tree.values()])


def sample_batch(batch: Batch, size: int, generator: torch.Generator) -> Batch:
    """A uniformly random batch of ``size`` examples, drawn without replacement."""
    idx = torch.randperm(len(batch[1]), generator=generator)[:size]
    return batch[0][idx], batch[1][idx]
