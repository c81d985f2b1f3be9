"""MinNorm-OG's own setting: an overparameterised regression that interpolates a few poisoned points.

Block, Mokhtari and Shakkottai's first experiment (the ``sin`` experiment of their code): a curve
``y = sin(x)`` sampled at ``n_retain`` points of ``[-5 pi, 5 pi]``, and ``n_forget`` poisoned
points at ``y = 1.5``; a model with many more parameters than points fits all of them, and
unlearning the poisoned points should give the model one would have trained on the retained
points alone. Here the model is linear in its parameters (fixed random SiLU features, the
weights of the last layer trained), so that the reference is exact: the minimum-norm
interpolator of the retained data, ``pinv(Phi_r) y_r`` (the solution gradient descent from zero
reaches), and the original model is the minimum-norm interpolator of all the data.

In that model the paper's two statements can be seen exactly: a method that only follows
retain-loss gradients (FT, and the retain part of NGPlus) moves the weights within the span of
the retain features, so the component of the original weights orthogonal to it, which carries
the poisoned points, stays; MinNorm-OG's projection removes it (with coefficient 1 and all
retain points, in one step: ``P theta0 = pinv(Phi_r) Phi_r theta0 = pinv(Phi_r) y_r``).

References:
    Block, Mokhtari, Shakkottai, "Machine Unlearning under Overparameterization" (NeurIPS
    2025, arXiv 2505.22601), Section 5.1 and Alg. 1; ``experiments/sin/data_module.py`` and
    ``common/unlearners/unlearners.py`` of jacob-block/overparameterized-unlearning (their
    network is a two-hidden-layer SiLU MLP of width 300 trained by AdamW; the random-feature
    model is this project's choice, for an exact reference).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from feasible._validate import is_int, is_real, names
from feasible.methods import orthogonal_part
from feasible.unlearn import output_gradients

__all__ = [
    "REGRESSION_METHODS",
    "RandomFeatures",
    "SineData",
    "min_norm_weights",
    "plot_fits",
    "sine_data",
    "stable_lr",
    "sup_distance",
    "sup_error",
    "unlearn_regression",
]

#: The unlearning methods of the regression, FT (gradient descent on the retain loss, their
#: ``GD``), GA (ascent on the forget loss), NGPlus (retain loss minus ``ga_coef`` times the
#: forget loss, their ``NGP``) and MinNorm-OG.
REGRESSION_METHODS: tuple[str, ...] = ("ft", "ga", "ngplus", "minnorm_og")

#: The interval of the authors' ``sin`` experiment (``scripts/sin/gen_data.sh``).
X_RANGE: tuple[float, float] = (-5 * math.pi, 5 * math.pi)


@dataclass(frozen=True)
class SineData:
    """The regression's data: retained points on ``sin`` and the poisoned (forget) points."""

    x_retain: Tensor
    y_retain: Tensor
    x_forget: Tensor
    y_forget: Tensor

    @property
    def x_all(self) -> Tensor:
        """Retained then forget inputs."""
        return torch.cat([self.x_retain, self.x_forget])

    @property
    def y_all(self) -> Tensor:
        """Retained then forget targets."""
        return torch.cat([self.y_retain, self.y_forget])


def _check(name: str, ok: bool, allowed: str, value: Any, caller: str) -> None:
    if not ok:
        raise ValueError(f"The '{name}' parameter of {caller} must be {allowed}. "
                         f"Got {value!r} instead.")


def sine_data(n_retain: int = 50, n_forget: int = 5, *, poison: float = 1.5,
              x_range: tuple[float, float] = X_RANGE, min_gap: float = 0.3,
              seed: int = 0) -> SineData:
    """The authors' data: ``x`` uniform on ``x_range``, ``y = sin(x)``; forget ``y = poison``.

    One departure (this project's): each forget point is redrawn until it is at least
    ``min_gap`` from every retained point (0: the authors' plain uniform draw). A poisoned point
    at 0.01 from a retained one (which a uniform draw of 55 points on ``[-5 pi, 5 pi]`` often
    gives) forces any interpolator to a slope of about 100 between them; the random-feature
    model then fits it with huge weights and oscillates over the whole interval, which hides
    what unlearning does.

    References:
        ``SinDataGenerator.generate_data`` of jacob-block/overparameterized-unlearning (50
        retain points, 5 forget points at 1.5, ``[-5 pi, 5 pi]``).

    Args:
        n_retain: retained points, >= 1.
        n_forget: poisoned points, >= 1.
        poison: the poisoned points' target.
        x_range: ``(x_min, x_max)``.
        min_gap: the smallest distance of a forget point to a retained one, >= 0 (and small
            enough to be met: at most a tenth of the interval).
        seed: the draw's seed.

    Returns:
        The data, float64 column vectors ``(n, 1)``.
    """
    for name, value in (("n_retain", n_retain), ("n_forget", n_forget)):
        _check(name, is_int(value) and value >= 1, "an int >= 1", value, "sine_data")
    low, high = x_range
    _check("x_range", is_real(low) and is_real(high) and low < high, "(x_min, x_max), x_min < x_max",
           x_range, "sine_data")
    _check("min_gap", is_real(min_gap) and 0 <= min_gap <= (high - low) / 10,
           "a float in [0, (x_max - x_min) / 10]", min_gap, "sine_data")
    gen = torch.Generator().manual_seed(seed)
    x_r = torch.rand(n_retain, 1, generator=gen, dtype=torch.float64) * (high - low) + low
    forget: list[Tensor] = []
    for _ in range(10000 * n_forget):
        if len(forget) == n_forget:
            break
        x = torch.rand(1, generator=gen, dtype=torch.float64) * (high - low) + low
        if min_gap == 0 or float((x_r.reshape(-1) - x).abs().min()) >= min_gap:
            forget.append(x)
    if len(forget) < n_forget:
        raise ValueError(f"The 'min_gap' parameter of sine_data is too large for {n_retain} "
                         f"retained points on {x_range}: no room for {n_forget} forget points "
                         f"{min_gap!r} away. Give a smaller min_gap.")
    x_f = torch.stack(forget)
    return SineData(x_r, torch.sin(x_r), x_f, torch.full_like(x_f, float(poison)))


class RandomFeatures(nn.Module):
    """``f(x) = sum_j theta_j silu(a_j (x - k_j)) / sqrt(width)``: linear in ``theta``.

    Fixed random first layer, trained last layer: the random-feature model of a one-hidden-layer
    SiLU network (the authors' network has two hidden SiLU layers, all trained). The slopes
    ``a_j ~ N(0, scale^2)``; the knots ``k_j`` uniform on the data's interval widened by 10 %,
    so that every region of the interval has features that bend there. ``theta`` (the weight of
    ``head``, no bias, zero at first) is the only parameter. In float64, so that the exact
    minimum-norm solutions are exact to rounding.

    Args:
        width: the number of features, >= 1 (overparameterised: many more than the points).
        scale: the spread of the slopes, > 0 (larger: sharper bends).
        x_range: the data's interval.
        seed: the features' seed.
    """

    def __init__(self, width: int = 1000, *, scale: float = 3.0,
                 x_range: tuple[float, float] = X_RANGE, seed: int = 0) -> None:
        super().__init__()
        _check("width", is_int(width) and width >= 1, "an int >= 1", width, "RandomFeatures")
        _check("scale", is_real(scale) and scale > 0, "a finite float > 0", scale,
               "RandomFeatures")
        gen = torch.Generator().manual_seed(seed)
        low, high = x_range
        centre, half = (low + high) / 2, 1.1 * (high - low) / 2
        slopes = torch.randn(width, generator=gen, dtype=torch.float64) * scale
        knots = centre + (torch.rand(width, generator=gen, dtype=torch.float64) * 2 - 1) * half
        self.register_buffer("a", slopes)
        self.register_buffer("b", -slopes * knots)
        self.head = nn.Linear(width, 1, bias=False, dtype=torch.float64)
        nn.init.zeros_(self.head.weight)

    def features(self, x: Tensor) -> Tensor:
        """``Phi``: one row of features per input (``x`` of shape ``(n, 1)``)."""
        return F.silu(x.to(self.a.dtype) * self.a + self.b) / math.sqrt(len(self.a))

    def forward(self, x: Tensor) -> Tensor:
        """The model's outputs on ``x``, ``(N, 1)``."""
        return self.head(self.features(x))

    @property
    def theta(self) -> Tensor:
        """The weights, a vector (detached)."""
        return self.head.weight.detach().reshape(-1)

    def set_theta(self, theta: Tensor) -> "RandomFeatures":
        """Set the weights; returns the model."""
        with torch.no_grad():
            self.head.weight.copy_(theta.reshape(1, -1))
        return self


def stable_lr(model: RandomFeatures, x: Tensor) -> float:
    """``1 / L`` for the mean squared loss on ``x``: ``L`` the largest eigenvalue of its Hessian,
    ``(2 / n) Phi^T Phi`` (gradient descent at this rate converges)."""
    phi = model.features(x)
    return float(len(x) / (2 * torch.linalg.matrix_norm(phi, ord=2) ** 2))


def min_norm_weights(model: RandomFeatures, x: Tensor, y: Tensor) -> Tensor:
    """The minimum-norm weights that interpolate ``(x, y)``: ``pinv(Phi) y``.

    When ``Phi`` (``n x width``) has full row rank this fits every point exactly, and it is the
    limit of gradient descent on the squared loss from zero weights.
    """
    phi = model.features(x)
    return (torch.linalg.pinv(phi) @ y.reshape(-1, 1).to(phi.dtype)).reshape(-1)


def _grid(x_range: tuple[float, float], points: int) -> Tensor:
    return torch.linspace(x_range[0], x_range[1], points, dtype=torch.float64).unsqueeze(1)


@torch.no_grad()
def sup_error(model: nn.Module, fn: Callable[[Tensor], Tensor] = torch.sin, *,
              x_range: tuple[float, float] = X_RANGE, points: int = 1000) -> float:
    """``max |f(x) - fn(x)|`` over ``points`` evenly spaced ``x`` (the authors' ``evaluate``)."""
    x = _grid(x_range, points)
    return float((model(x).reshape(-1) - fn(x).reshape(-1)).abs().max())


@torch.no_grad()
def sup_distance(model: nn.Module, other: nn.Module, *, x_range: tuple[float, float] = X_RANGE,
                 points: int = 1000) -> float:
    """``max |f(x) - g(x)|`` of two models over ``points`` evenly spaced ``x``."""
    x = _grid(x_range, points)
    return float((model(x).reshape(-1) - other(x).reshape(-1)).abs().max())


def _mse(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return ((model(x).reshape(-1) - y.reshape(-1)) ** 2).mean()


def unlearn_regression(model: nn.Module, data: SineData, method: str, *, lr: float,
                       epochs: int, ga_coef: float = 0.1, reg_coef: float = 1.0,
                       reg_decay: float = 1.0, samples: int = 50, proj_every: int = 1,
                       gd_epochs: int = 0, optimizer: str = "sgd",
                       seed: int = 0) -> list[dict[str, float]]:
    """Unlearn the forget points from a regression model in place, full batch, as the authors.

    Each epoch is one step on the whole retain and forget sets (their ``sin`` interface loads
    each set as one batch). ``"ft"``: descent on the retain MSE; ``"ga"``: ascent on the forget
    MSE; ``"ngplus"``: descent on ``MSE_r - ga_coef * MSE_f``; ``"minnorm_og"``: before the
    retain step of every ``proj_every``-th epoch but the last ``gd_epochs``, the projection
    ``theta -= c * P_perp theta`` over the output gradients of ``samples`` random retain points
    (:func:`feasible.methods.orthogonal_part`, :func:`feasible.unlearn.output_gradients`), with
    ``c = reg_coef * reg_decay**k`` at the ``k``-th projection.

    References:
        ``GDUnlearner``, ``GAUnlearner``, ``NGPUnlearner`` and ``MinNormOGUnlearner`` in
        ``common/unlearners/unlearners.py`` of jacob-block/overparameterized-unlearning; their
        optimiser is AdamW (``optimizer="adamw"``, weight decay 0.01), plain gradient descent
        (``"sgd"``) keeps the linear model's updates within the span of its feature gradients.

    Args:
        model: the model, updated in place.
        data: the regression's data.
        method: one of :data:`REGRESSION_METHODS`.
        lr: the learning rate, > 0.
        epochs: steps, >= 1.
        ga_coef: NGPlus's weight on the forget loss, >= 0.
        reg_coef: MinNorm-OG's first coefficient, in [0, 1].
        reg_decay: its decay per projection, in [0, 1].
        samples: retain points per projection, >= 1.
        proj_every: project every ``proj_every``-th epoch, >= 1.
        gd_epochs: the last epochs without projection, >= 0.
        optimizer: ``"sgd"`` or ``"adamw"``.
        seed: the samples' seed.

    Returns:
        A data frame, one row per epoch, with ``epoch``, ``retain_mse`` and ``forget_mse``
        (before that epoch's step); the last row also has ``sup_error`` (against sin, after the
        last step).

    Raises:
        ValueError: an unknown method or optimiser, or a value out of range (named).
    """
    caller = "unlearn_regression"
    if method not in REGRESSION_METHODS:
        raise ValueError(f"Unknown regression method {method!r}; expected one of "
                         f"{names(REGRESSION_METHODS)}.")
    _check("optimizer", optimizer in ("sgd", "adamw"), "'sgd' or 'adamw'", optimizer, caller)
    _check("lr", is_real(lr) and lr > 0, "a finite float > 0", lr, caller)
    _check("epochs", is_int(epochs) and epochs >= 1, "an int >= 1", epochs, caller)
    _check("ga_coef", is_real(ga_coef) and ga_coef >= 0, "a finite float >= 0", ga_coef, caller)
    for name, value in (("reg_coef", reg_coef), ("reg_decay", reg_decay)):
        _check(name, is_real(value) and 0 <= value <= 1, "a float in [0, 1]", value, caller)
    for name, value, low in (("samples", samples, 1), ("proj_every", proj_every, 1),
                             ("gd_epochs", gd_epochs, 0)):
        _check(name, is_int(value) and value >= low, f"an int >= {low}", value, caller)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    opt = (torch.optim.SGD(params.values(), lr=lr) if optimizer == "sgd"
           else torch.optim.AdamW(params.values(), lr=lr))
    gen = torch.Generator().manual_seed(seed)
    coef, history = float(reg_coef), []
    for epoch in range(epochs):
        if (method == "minnorm_og" and epoch < epochs - gd_epochs and epoch % proj_every == 0):
            idx = torch.randperm(len(data.x_retain), generator=gen)[:samples]
            basis = output_gradients(model, params, data.x_retain[idx])
            theta = torch.cat([p.detach().reshape(-1) for p in params.values()])
            new = theta - coef * orthogonal_part(theta, basis)
            with torch.no_grad():
                start = 0
                for p in params.values():
                    p.copy_(new[start:start + p.numel()].view_as(p))
                    start += p.numel()
            coef *= reg_decay
        opt.zero_grad()
        retain = _mse(model, data.x_retain, data.y_retain)
        forget = _mse(model, data.x_forget, data.y_forget)
        loss = {"ft": retain, "minnorm_og": retain, "ga": -forget,
                "ngplus": retain - ga_coef * forget}[method]
        loss.backward()
        opt.step()
        history.append({"epoch": epoch + 1, "retain_mse": float(retain.detach()),
                        "forget_mse": float(forget.detach())})
    history[-1]["sup_error"] = sup_error(model)
    return history


def plot_fits(data: SineData, models: Mapping[str, nn.Module], *,
              reference: nn.Module | None = None, original: nn.Module | None = None,
              x_range: tuple[float, float] = X_RANGE, points: int = 1000,
              columns: int = 3) -> Any:
    """One panel per model: its curve, ``sin``, the original and the reference, and the points.

    The layout of the authors' ``experiments/sin/plot_results.py`` (original faint, unlearned
    solid, ``sin`` dashed, retained points as circles, forget points as crosses), one panel per
    method, plus this project's exact reference (the minimum-norm interpolator of the retained
    data), dotted.

    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt

    x = _grid(x_range, points)
    xs = x.reshape(-1).numpy()
    rows = math.ceil(len(models) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 2.9 * rows), sharey=True,
                             squeeze=False)
    with torch.no_grad():
        for ax, (name, model) in zip(axes.flat, models.items()):
            if original is not None:
                ax.plot(xs, original(x).reshape(-1).numpy(), color="#E69F00", alpha=0.5, lw=2,
                        label="original")
            ax.plot(xs, torch.sin(x).reshape(-1).numpy(), "--", color="#009E73", lw=1.5,
                    label="sin(x)")
            if reference is not None:
                ax.plot(xs, reference(x).reshape(-1).numpy(), ":", color="#000000", lw=1.5,
                        label="min-norm on $D_r$")
            ax.plot(xs, model(x).reshape(-1).numpy(), color="#0072B2", lw=2, label="unlearned")
            ax.scatter(data.x_retain.reshape(-1), data.y_retain.reshape(-1), s=14,
                       color="#009E73", label="retained")
            ax.scatter(data.x_forget.reshape(-1), data.y_forget.reshape(-1), s=40, marker="x",
                       color="#D55E00", label="forget (poisoned)")
            ax.set_title(name)
            ax.set_ylim(-2.0, 2.5)
            ax.set_xlabel("x")
    for ax in list(axes.flat)[len(models):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=6, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.07 / rows, 1, 1))
    return fig
