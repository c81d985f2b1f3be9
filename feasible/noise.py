"""Gradient noise for the PROB and focus add-ons, the scale :func:`feasible.masks.phi` divides by.

Three noise models, by name (:data:`NOISE_MODELS`): ``"ema"``, the authors' running second
moment of the batch gradient (:func:`ema_scale`, no extra backward pass); ``"microbatch"`` and
``"per_sample"``, standard errors of the batch-mean gradient (:func:`grad_stats`).
"""
from __future__ import annotations

import math
import numbers
from typing import Callable, Iterator, NamedTuple, Optional

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap

from feasible._tree import Tree, check_trees, tree_map_pair

#: The noise models by name, each with one line on how the scale of a batch gradient is estimated.
NOISE_MODELS: dict[str, str] = {
    "ema": "the authors' running second moment of the batch gradient (ema_scale); no extra "
           "backward pass",
    "microbatch": "standard error of the batch mean from k micro-batch gradients (grad_stats)",
    "per_sample": "standard error of the batch mean from exact per-sample gradients "
                  "(grad_stats)",
}

#: Samples per vmap call in ``method="per_sample"``: bounds memory at this many gradients.
_PER_SAMPLE_CHUNK = 64


class GradStats(NamedTuple):
    """The result of :func:`grad_stats`: mean gradient, its standard error, and the loss."""

    #: Parameter name to the batch-mean gradient (one entry per trainable parameter).
    mean: dict[str, Tensor]
    #: Parameter name to the standard error of that mean, per coordinate (>= 0).
    se: dict[str, Tensor]
    #: The batch's mean loss.
    loss: float


def _coupling_modules(model: nn.Module) -> list[str]:
    """Names of BatchNorm modules that mix samples: training mode, or no running statistics."""
    names = []
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            if module.training or module.running_mean is None:
                names.append(name or type(module).__name__)
    return names


def _scalar(loss: Tensor) -> Tensor:
    if not isinstance(loss, Tensor) or loss.dim() != 0:
        shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise ValueError(
            "The 'loss_fn' argument of grad_stats must return a scalar tensor, the mean loss "
            f"over the batch. Got {shape} instead."
        )
    return loss


def _trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    return {name: param for name, param in model.named_parameters() if param.requires_grad}


def _microbatch(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    inputs: Tensor,
    targets: Tensor,
    k: int,
) -> GradStats:
    """K chunks: weighted mean of chunk gradients and the weighted, unbiased variance of it."""
    params = _trainable(model)
    names, tensors = list(params), list(params.values())
    n = inputs.shape[0]
    mean = [torch.zeros_like(t) for t in tensors]
    m2 = [torch.zeros_like(t) for t in tensors]
    weight_seen, losses = 0.0, []
    for x, y in zip(torch.tensor_split(inputs, k), torch.tensor_split(targets, k)):
        chunk_loss = _scalar(loss_fn(model(x), y))
        grads = torch.autograd.grad(chunk_loss, tensors, allow_unused=True)
        w = x.shape[0] / n
        weight_seen += w
        losses.append(w * chunk_loss.detach())
        for i, g in enumerate(grads):
            g = torch.zeros_like(tensors[i]) if g is None else g.detach()
            # Weighted Welford (West 1979): sum_j w_j (g_j - mean)^2 accumulates in m2.
            delta = g - mean[i]
            mean[i] += (w / weight_seen) * delta
            m2[i] += w * delta * (g - mean[i])
    se = [(v.clamp_min(0.0) / (k - 1)).sqrt() for v in m2]
    loss = float(sum(losses))  # one host synchronisation
    return GradStats(dict(zip(names, mean)), dict(zip(names, se)), loss)


def per_sample_chunks(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    inputs: Tensor,
    targets: Tensor,
    chunk: int = _PER_SAMPLE_CHUNK,
) -> Iterator[tuple[dict[str, Tensor], Tensor]]:
    """Exact per-sample gradients and losses, ``chunk`` examples at a time (``torch.func``).

    ``functional_call`` under ``vmap(grad_and_value)``: the model and its parameters are left as
    they are. Meaningful for a model without cross-sample coupling (no BatchNorm in training
    mode; :func:`grad_stats` refuses that case).

    Yields:
        Per chunk: the gradients by trainable parameter name, each of shape
        ``(examples, *param.shape)``, and the examples' losses, shape ``(examples,)``.
    """
    params = {name: p.detach() for name, p in _trainable(model).items()}
    frozen = {name: p.detach() for name, p in model.named_parameters() if not p.requires_grad}
    buffers = dict(model.named_buffers())

    def sample_loss(trainable: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        out = functional_call(model, (trainable, frozen, buffers), (x.unsqueeze(0),))
        return _scalar(loss_fn(out, y.unsqueeze(0)))

    per_sample = vmap(grad_and_value(sample_loss), in_dims=(None, 0, 0), randomness="different")
    for start in range(0, inputs.shape[0], chunk):
        grads, losses = per_sample(params, inputs[start:start + chunk],
                                   targets[start:start + chunk])
        yield {name: g.detach() for name, g in grads.items()}, losses.detach()


def _per_sample(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    inputs: Tensor,
    targets: Tensor,
    k: int,
) -> GradStats:
    """Exact per-sample gradients (:func:`per_sample_chunks`), merged chunk by chunk (Chan et
    al. 1979)."""
    del k  # one gradient per sample
    count, loss_sums = 0, []
    mean = {name: torch.zeros_like(p) for name, p in _trainable(model).items()}
    m2 = {name: torch.zeros_like(p) for name, p in _trainable(model).items()}
    n = inputs.shape[0]
    for grads, sample_losses in per_sample_chunks(model, loss_fn, inputs, targets):
        b = sample_losses.shape[0]
        total = count + b
        loss_sums.append(sample_losses.sum())
        for name, g in grads.items():
            chunk_mean = g.mean(dim=0)
            chunk_m2 = ((g - chunk_mean) ** 2).sum(dim=0)
            delta = chunk_mean - mean[name]
            mean[name] = mean[name] + delta * (b / total)
            m2[name] = m2[name] + chunk_m2 + delta**2 * (count * b / total)
        count = total
    se = {name: (v.clamp_min(0.0) / ((n - 1) * n)).sqrt() for name, v in m2.items()}
    return GradStats(mean, se, float(sum(loss_sums)) / n)


#: Estimator name to function ``(model, loss_fn, inputs, targets, k) -> GradStats``.
_ESTIMATORS = {"microbatch": _microbatch, "per_sample": _per_sample}


def grad_stats(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    inputs: Tensor,
    targets: Tensor,
    *,
    method: str = "microbatch",
    k: int = 8,
) -> GradStats:
    """The batch-mean gradient of every trainable parameter and its standard error.

    ``method="microbatch"`` splits the batch into ``k`` chunks of near-equal sizes
    :math:`n_j` (``torch.tensor_split``), with weights :math:`w_j = n_j / n`. The mean is
    :math:`\\bar g = \\sum_j w_j g_j`, the full-batch gradient for a mean-reduced loss and a
    model without cross-sample coupling. The squared standard error is
    :math:`s^2 = \\sum_j w_j (g_j - \\bar g)^2 / (k - 1)`: for equal chunks the sample variance
    of the chunk gradients (ddof = 1) divided by ``k``, and for unequal chunks still unbiased
    for :math:`\\mathrm{Var}(\\bar g)` when samples are i.i.d. Cost: ``k`` backward passes,
    no extra memory. With BatchNorm in training mode each chunk is normalised by its own
    statistics, so the mean then differs from the full-batch gradient.

    ``method="per_sample"`` computes exact per-sample gradients with ``torch.func``
    (``functional_call`` under ``vmap(grad)``, dropout drawn independently per sample): the
    mean over samples and :math:`s = \\mathrm{std}_{ddof=1} / \\sqrt{n}`. It needs a model
    without cross-sample coupling; BatchNorm in training mode is refused.

    The model is left as it was found: no ``.grad`` is written, every buffer (e.g.
    BatchNorm's running statistics) is restored, train/eval modes are unchanged.

    References:
        This project's estimators: the authors' code estimates no standard error (it uses
        :func:`ema_scale`); the first author's blog (post 2026-08-05-correlated-batch-noise)
        uses micro-batch standard errors.

    Args:
        model: the network; its trainable parameters are those with ``requires_grad``.
        loss_fn: ``loss_fn(outputs, targets)`` returns the mean loss over the batch, e.g.
            ``torch.nn.functional.cross_entropy``.
        inputs: the batch, first dimension the batch size ``n`` (>= 2).
        targets: the targets, first dimension ``n``.
        method: ``"microbatch"`` or ``"per_sample"``.
        k: the number of chunks for ``"microbatch"``, an int in [2, n].

    Returns:
        ``GradStats(mean, se, loss)``: dicts from parameter name to tensors shaped like the
        parameter (detached, on its device), and the batch's mean loss.

    Raises:
        ValueError: an unknown method, a bad ``k``, fewer than 2 samples, mismatched batch
            sizes, a non-scalar loss, or BatchNorm in training mode with ``"per_sample"``.
        TypeError: ``inputs`` or ``targets`` not tensors, or ``model`` not a module.
    """
    if not isinstance(method, str) or method not in _ESTIMATORS:
        expected = ", ".join(repr(m) for m in _ESTIMATORS)
        raise ValueError(f"Unknown noise estimator {method!r}; expected one of {expected}.")
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"The 'model' argument of grad_stats must be a torch.nn.Module. "
            f"Got {type(model).__name__} instead."
        )
    for name, value in (("inputs", inputs), ("targets", targets)):
        if not isinstance(value, Tensor) or value.dim() == 0:
            raise TypeError(
                f"The '{name}' argument of grad_stats must be a torch.Tensor with a batch "
                f"dimension. Got {type(value).__name__} instead."
            )
    n = inputs.shape[0]
    if targets.shape[0] != n:
        raise ValueError(
            "The 'inputs' and 'targets' arguments of grad_stats must have the same batch size. "
            f"Got {n} and {targets.shape[0]} instead."
        )
    if n < 2:
        raise ValueError(
            f"The 'inputs' argument of grad_stats must hold at least 2 samples to estimate a "
            f"standard error. Got {n} instead."
        )
    if method == "microbatch" and (
        isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 2 <= k <= n
    ):
        raise ValueError(
            f"The 'k' parameter of grad_stats must be an int in the range [2, {n}] "
            f"(2 to the batch size). Got {k!r} instead."
        )
    if method == "per_sample":
        coupled = _coupling_modules(model)
        if coupled:
            raise ValueError(
                "grad_stats(method='per_sample') needs samples that do not interact, but "
                f"BatchNorm module(s) {coupled} normalise with batch statistics (training "
                "mode, or no running statistics), which couples the samples. Put the model in "
                "eval mode for the statistics (model.eval()), or use method='microbatch'."
            )
    if not _trainable(model):
        raise ValueError("The 'model' argument of grad_stats has no parameter with requires_grad.")

    saved = {name: buf.detach().clone() for name, buf in model.named_buffers()}
    try:
        with torch.enable_grad():  # also works when called under torch.no_grad()
            return _ESTIMATORS[method](model, loss_fn, inputs, targets, k)
    finally:
        with torch.no_grad():
            for name, buf in model.named_buffers():
                if name in saved:
                    buf.copy_(saved[name])


def _check_rho_eps(rho: object, eps: object) -> None:
    ok = isinstance(rho, numbers.Real) and not isinstance(rho, bool)
    if not ok or not (0.0 < rho <= 1.0):
        raise ValueError(
            "The 'rho' parameter of ema_scale must be a float in the interval (0, 1]. "
            f"Got {rho!r} instead."
        )
    ok = isinstance(eps, numbers.Real) and not isinstance(eps, bool)
    if not ok or not math.isfinite(eps) or eps <= 0:
        raise ValueError(
            f"The 'eps' parameter of ema_scale must be a finite float > 0. Got {eps!r} instead."
        )


#: The authors' weight of the new squared gradient in the running second moment (hard-coded
#: in their code) and the constant under its square root.
EMA_RHO, EMA_EPS = 0.9, 1e-8


def ema_scale(
    g: Tree,
    v: Optional[Tree] = None,
    *,
    rho: float = EMA_RHO,
    eps: float = EMA_EPS,
) -> tuple[Tree, Tree]:
    """The authors' noise scale: a running second moment of the batch gradient.

    One step of the recurrence, per coordinate:
    :math:`V_1 = (1 - \\rho)\\, \\hat g_1^2` at the first step (``v=None``) and
    :math:`V_t = \\rho\\, \\hat g_t^2 + (1 - \\rho)\\, V_{t-1}` after, with the scale
    :math:`s_t = \\sqrt{V_t + \\varepsilon}`. Then ``phi(g, scale)`` is the authors'
    :math:`\\varphi = \\Phi(\\hat g / \\sqrt{V + \\varepsilon})`. Carry ``v`` from
    step to step (and across epochs), one state per loss; it costs no extra backward pass.

    As written in the authors' code, :math:`\\rho` weighs the *new* term (an exponential
    moving average usually weighs the old one, as Adam's :math:`\\beta_2` does), so
    :math:`V_t \\ge \\rho\\, \\hat g_t^2` and :math:`\\lvert \\hat g_t / s_t \\rvert
    < 1 / \\sqrt{\\rho}` (about 1.054 at :math:`\\rho = 0.9`) from the second step on: then
    :math:`\\varphi \\in (0.146, 0.854)` and the agreement probability stays within about
    [0.249, 0.751]. At the first step :math:`\\lvert \\hat g_1 / s_1 \\rvert < 1 /
    \\sqrt{1 - \\rho}` (about 3.16, so :math:`\\varphi` is nearly 0 or 1 and the focus vector
    nearly the AND mask); with :math:`\\rho = 1`, :math:`V_1 = 0` and the first ratio is
    :math:`\\hat g_1 / \\sqrt{\\varepsilon}`, unbounded. :math:`\\varepsilon` sits inside
    the square root, so where gradients are of the order of :math:`\\sqrt{\\varepsilon}` or
    smaller the ratio shrinks toward 0 and :math:`\\varphi` toward 1/2. Calling :math:`s` a
    standard error is the code's modelling choice: it is the size of recent gradients, not
    their spread.

    References:
        The authors' code, ``unlearn/NGradFocus.py``, ``NGradMask.py``, ``SRGradFocus.py`` and
        their OPT variants in ``owl1996/UnlearningFocusVector`` (``VF``, ``VR``; ``rho = 0.9``
        hard-coded; the state is carried across epochs by ``unlearn/impl.py``). An earlier
        commit of ``NGradFocus.py`` and ``NGradMask.py`` started at :math:`V_1 = \\hat g_1^2`;
        the latest starts every variant at :math:`(1 - \\rho)\\, \\hat g_1^2`, as here.

    Args:
        g: the batch gradient of one loss: a tensor, or a list or dict of tensors.
        v: the state returned by the previous call for the same loss, same structure and
            shapes, >= 0; None at the first step.
        rho: the weight of the new squared gradient, in (0, 1].
        eps: added to :math:`V` under the square root, > 0.

    Returns:
        ``(scale, v)``: the scale :math:`\\sqrt{V + \\varepsilon}` (> 0) and the new state
        :math:`V`, each structured like ``g``.

    Raises:
        ValueError: ``rho`` outside (0, 1], ``eps`` not > 0, NaN or inf, a negative ``v``, or a
            ``v`` whose structure or shapes differ from ``g``'s.
        TypeError: a leaf that is not a floating-point tensor.
    """
    _check_rho_eps(rho, eps)
    if v is None:
        check_trees("ema_scale", {"g": g})
    else:
        check_trees("ema_scale", {"g": g, "v": v}, nonnegative={"v": "a running second moment"})
    return ema_step(g, v, rho, eps)


def ema_step(g: Tree, v: Tree | None, rho: float, eps: float) -> tuple[Tree, Tree]:
    """:func:`ema_scale` without its validation, for a loop that built its own inputs."""
    if v is None:

        def first(leaf: Tensor) -> tuple[Tensor, Tensor]:
            state = (1.0 - rho) * leaf.detach() ** 2
            return (state + eps).sqrt(), state

        return tree_map_pair(first, g)

    def later(leaf: Tensor, prev: Tensor) -> tuple[Tensor, Tensor]:
        state = rho * leaf.detach() ** 2 + (1.0 - rho) * prev
        return (state + eps).sqrt(), state

    return tree_map_pair(later, g, v)
