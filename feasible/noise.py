"""Gradient noise for the PROB and focus add-ons, the scale :func:`feasible.masks.phi` divides by.

Three noise models, by name (:data:`NOISE_MODELS`): ``"ema"``, the authors' running second
moment of the batch gradient (:func:`ema_scale`, no extra backward pass); ``"microbatch"`` and
``"per_sample"``, standard errors of the batch-mean gradient (:func:`grad_stats`).
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Iterator, NamedTuple, Optional

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


def _merge(acc: tuple[Tensor, Tensor, int] | None, rows: Tensor) -> tuple[Tensor, Tensor, int]:
    """Mean, centred sum of squares and count of the rows seen so far, merged with ``rows``
    (Chan, Golub and LeVeque 1979); ``acc=None`` starts from ``rows`` alone."""
    b = rows.shape[0]
    chunk_mean = rows.mean(dim=0)
    chunk_m2 = ((rows - chunk_mean) ** 2).sum(dim=0)
    if acc is None:
        return chunk_mean, chunk_m2, b
    mean, m2, count = acc
    total = count + b
    delta = chunk_mean - mean
    return mean + delta * (b / total), m2 + chunk_m2 + delta**2 * (count * b / total), total


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
    loss_sums = []
    acc: dict[str, tuple[Tensor, Tensor, int]] = {}
    n = inputs.shape[0]
    for grads, sample_losses in per_sample_chunks(model, loss_fn, inputs, targets):
        loss_sums.append(sample_losses.sum())
        for name, g in grads.items():
            acc[name] = _merge(acc.get(name), g)
    mean = {name: a[0] for name, a in acc.items()}
    se = {name: (a[1].clamp_min(0.0) / ((n - 1) * n)).sqrt() for name, a in acc.items()}
    return GradStats(mean, se, float(sum(loss_sums)) / n)


# --- one backward pass: per-chunk and per-sample gradients from the layers' inputs and output
# gradients (Goodfellow 2015, "Efficient per-example gradient computations"; Rochette, Manoel and
# Tramel 2019 for convolutions; Opacus' grad samplers) ---------------------------------------

_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_LAYERS = (nn.Linear, nn.Conv2d, *_BATCHNORMS)


class _NotSeparable(Exception):
    """The model is outside the fast path's cases: the caller falls back to the loop."""


def _fast_layers(model: nn.Module) -> list[nn.Module] | None:
    """The modules holding trainable parameters, if every one is a layer the fast path reads.

    Linear, Conv2d (zero padding given as numbers) and BatchNorm, each holding only its own
    ``weight`` and ``bias``; ``None`` when some trainable parameter lives elsewhere, or when
    dropout in training mode would draw other masks than the loop of chunks (the fast path is
    the default only where it gives the loop's numbers).
    """
    layers = []
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd) and module.training:
            return None
        own = [n for n, p in module.named_parameters(recurse=False) if p.requires_grad]
        if not own:
            continue
        if not isinstance(module, _LAYERS) or not set(own) <= {"weight", "bias"}:
            return None
        if isinstance(module, nn.Conv2d) and (module.padding_mode != "zeros"
                                              or isinstance(module.padding, str)):
            return None
        layers.append(module)
    return layers


def _bn_statistics(module: nn.Module) -> tuple[Tensor, Tensor]:
    """BatchNorm's running mean and ``1 / sqrt(var + eps)`` (eval mode)."""
    return module.running_mean, torch.rsqrt(module.running_var + module.eps)


def _chunk_contributions(module: nn.Module, a: Tensor, g: Tensor, sizes: list[int],
                         stats: list[tuple[Tensor, Tensor]] | None) -> dict[str, Tensor]:
    """Per chunk, the part of the gradient of ``weight`` and ``bias`` its samples make.

    ``a`` is the layer's input and ``g`` the gradient of the (weighted) loss with respect to its
    output; both split into chunks of ``sizes`` samples. For BatchNorm, ``stats`` holds each
    chunk's mean and ``1 / sqrt(var + eps)`` as the forward pass normalised it (``None``: the
    running statistics, eval mode); ``d/d gamma = sum g (a - mean) * invstd`` and
    ``d/d beta = sum g`` over the chunk's rows. Returns ``(k, *param.shape)`` tensors.
    """
    out: dict[str, list[Tensor]] = {"weight": [], "bias": []}
    for j, (a_j, g_j) in enumerate(zip(torch.split(a, sizes), torch.split(g, sizes))):
        if isinstance(module, nn.Linear):
            a2, g2 = a_j.reshape(-1, a_j.shape[-1]), g_j.reshape(-1, g_j.shape[-1])
            out["weight"].append(g2.T @ a2)
            out["bias"].append(g2.sum(0))
        elif isinstance(module, nn.Conv2d):
            out["weight"].append(torch.nn.grad.conv2d_weight(
                a_j, module.weight.shape, g_j, module.stride, module.padding, module.dilation,
                module.groups))
            out["bias"].append(g_j.sum((0, 2, 3)))
        else:  # BatchNorm
            dims = [0, *range(2, g_j.dim())]
            mean, invstd = _bn_statistics(module) if stats is None else stats[j]
            g_sum = g_j.sum(dims)
            out["weight"].append(invstd * ((g_j * a_j).sum(dims) - mean * g_sum))
            out["bias"].append(g_sum)
    return {name: torch.stack(parts) for name, parts in out.items()
            if getattr(module, name, None) is not None and getattr(module, name).requires_grad}


def _ghost_forward(module: nn.Module, sizes: list[int],
                   stats: list[tuple[Tensor, Tensor]]) -> Callable[[Tensor], Tensor]:
    """BatchNorm normalising each chunk by its own statistics, as the loop of chunks does.

    Each chunk's mean and ``1 / sqrt(var + eps)`` are appended to ``stats``.
    """

    def forward(x: Tensor) -> Tensor:
        parts = []
        for part in torch.split(x, sizes):
            y, mean, invstd = torch.native_batch_norm(part, module.weight, module.bias, None,
                                                      None, True, 0.0, module.eps)
            parts.append(y)
            stats.append((mean.detach(), invstd.detach()))
        return torch.cat(parts)

    return forward


def _layer_backward(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    inputs: Tensor,
    targets: Tensor,
    sizes: list[int],
) -> tuple[list[tuple[nn.Module, Tensor, Tensor | None, Any]], Tensor]:
    """One forward and one backward pass to every layer's output, none to the weights.

    The batch runs forward once; BatchNorm that normalises by batch statistics does so chunk by
    chunk (so each chunk's outputs are those of the chunk alone). The loss is
    ``sum_j w_j loss_fn(outputs_j, targets_j)`` over chunks of ``sizes`` samples, with
    ``w_j = n_j / n``; one backward pass gives the gradient at every layer's output, and the
    weights' gradients are never formed by autograd.

    Returns:
        Per layer holding trainable parameters: the module, its input, the gradient at its
        output (``None`` if the loss does not reach it) and, for chunk-normalised BatchNorm,
        each chunk's ``(mean, invstd)`` (else ``None``); and the weighted loss.

    Raises:
        _NotSeparable: an unsupported layer, a layer run twice, or a layer's input or output
            changed in place.
    """
    layers = _fast_layers(model)
    if layers is None:
        raise _NotSeparable
    n = inputs.shape[0]
    coupled = {m for m in layers if isinstance(m, _BATCHNORMS)
               and (m.training or m.running_mean is None)}
    seen: dict[nn.Module, tuple[Tensor, Tensor, int, int]] = {}

    def capture(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
        if module in seen or len(args) != 1:
            raise _NotSeparable
        seen[module] = (args[0], output, args[0]._version, output._version)

    handles = [m.register_forward_hook(capture) for m in layers]
    stats: dict[nn.Module, list[tuple[Tensor, Tensor]]] = {m: [] for m in coupled}
    for m in coupled:
        m.forward = _ghost_forward(m, sizes, stats[m])
    try:
        outputs = model(inputs)
    finally:
        for h in handles:
            h.remove()
        for m in coupled:
            del m.forward
    losses = [_scalar(loss_fn(o, t)) for o, t in zip(torch.split(outputs, sizes),
                                                     torch.split(targets, sizes))]
    total = sum((size / n) * loss for size, loss in zip(sizes, losses))
    order = [m for m in layers if m in seen]
    grads = torch.autograd.grad(total, [seen[m][1] for m in order], allow_unused=True)
    if any(seen[m][0]._version != seen[m][2] or seen[m][1]._version != seen[m][3]
           for m in order):
        raise _NotSeparable
    by_module = dict(zip(order, grads))
    out = []
    for m in layers:
        g = by_module.get(m)
        a = seen[m][0].detach() if m in seen else None
        out.append((m, a, None if g is None else g.detach(), stats.get(m)))
    return out, total.detach()


def _owned(model: nn.Module, module: nn.Module) -> dict[str, str]:
    """``weight``/``bias`` of ``module`` that are trainable, to their names in ``model``."""
    names = {p: name for name, p in model.named_parameters()}
    return {pname: names[getattr(module, pname)] for pname in ("weight", "bias")
            if getattr(module, pname, None) is not None and getattr(module, pname).requires_grad}


def _chunk_gradients(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    inputs: Tensor,
    targets: Tensor,
    sizes: list[int],
) -> tuple[dict[str, Tensor], Tensor, list[float]]:
    """Each chunk's weighted gradient by parameter name, from :func:`_layer_backward`.

    Each chunk's gradient of a weight is formed from its rows of the layer's input and output
    gradient (:func:`_chunk_contributions`).

    Returns:
        Parameter name to ``(k, *shape)``: chunk ``j``'s ``w_j * grad loss_fn(chunk j)``; the
        weighted loss; the weights ``w_j``.
    """
    layers, total = _layer_backward(model, loss_fn, inputs, targets, sizes)
    chunks: dict[str, Tensor] = {}
    for m, a, g, stats in layers:
        owned = _owned(model, m)
        parts = {} if g is None else _chunk_contributions(m, a, g, sizes, stats)
        for pname, name in owned.items():
            p = getattr(m, pname)
            chunks[name] = parts.get(pname, p.new_zeros((len(sizes), *p.shape)))
    return chunks, total, [size / inputs.shape[0] for size in sizes]


def _per_sample_moments(module: nn.Module, a: Tensor, g: Tensor,
                        n: int) -> dict[str, tuple[Tensor, Tensor]]:
    """Per parameter, the sum of the per-sample gradients and their centred sum of squares.

    ``g`` holds ``grad l_i / n`` in row ``i`` (the loss is the mean of per-sample losses), so
    the per-sample gradient of a weight is ``n`` times its row's contribution. A Linear layer
    on 2-D inputs needs no per-sample tensor: ``sum_i g_i^2 = n^2 (G^2)^T (A^2)`` (Goodfellow
    2015), in float64 so that subtracting ``(sum_i g_i)^2 / n`` loses nothing a float32 result
    keeps. Other layers form the per-sample gradients ``_PER_SAMPLE_CHUNK`` samples at a time
    (Conv2d through ``unfold``, Rochette et al. 2019) and merge centred sums (Chan et al. 1979).
    """
    if isinstance(module, nn.Linear) and a.dim() == 2:
        a64, g64 = a.double(), g.double() * n
        out = {"weight": (g64.T @ a64, (g64 * g64).T @ (a64 * a64)),
               "bias": (g64.sum(0), (g64 * g64).sum(0))}
        return {name: (s1.to(a.dtype), (s2 - s1 * s1 / n).clamp_min(0.0).to(a.dtype))
                for name, (s1, s2) in out.items()}
    if isinstance(module, nn.Conv2d) and module.groups != 1:
        raise _NotSeparable
    acc: dict[str, tuple[Tensor, Tensor, int]] = {}
    for start in range(0, n, _PER_SAMPLE_CHUNK):
        a_c, g_c = a[start:start + _PER_SAMPLE_CHUNK], g[start:start + _PER_SAMPLE_CHUNK] * n
        b = a_c.shape[0]
        if isinstance(module, nn.Linear):
            per = {"weight": torch.einsum("b...o,b...i->boi", g_c, a_c),
                   "bias": g_c.reshape(b, -1, g_c.shape[-1]).sum(1)}
        elif isinstance(module, nn.Conv2d):
            cols = torch.nn.functional.unfold(a_c, module.kernel_size, module.dilation,
                                              module.padding, module.stride)
            per = {"weight": torch.bmm(g_c.reshape(b, g_c.shape[1], -1), cols.transpose(1, 2))
                   .reshape(b, *module.weight.shape), "bias": g_c.sum((2, 3))}
        else:  # BatchNorm with running statistics (eval mode)
            dims = list(range(2, g_c.dim()))
            mean, invstd = _bn_statistics(module)
            shape = [1, -1] + [1] * (a_c.dim() - 2)
            x_hat = (a_c - mean.view(shape)) * invstd.view(shape)
            per = {"weight": g_c * x_hat, "bias": g_c}
            if dims:  # over positions (sum over an empty list would sum everything)
                per = {name: t.sum(dims) for name, t in per.items()}
        for name, t in per.items():
            acc[name] = _merge(acc.get(name), t)
    return {name: (m * n, m2) for name, (m, m2, _) in acc.items()}


def _per_sample_fast(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    inputs: Tensor,
    targets: Tensor,
    k: int,
) -> GradStats:
    """:func:`_per_sample` in one forward and one backward pass (:func:`_per_sample_moments`)."""
    del k
    n = inputs.shape[0]
    if _coupling_modules(model):
        raise _NotSeparable  # grad_stats refuses this case before; kept for direct callers
    layers, total = _layer_backward(model, loss_fn, inputs, targets, [1] * n)
    mean, se = {}, {}
    for m, a, g, _ in layers:
        owned = _owned(model, m)
        moments = {} if g is None else _per_sample_moments(m, a, g, n)
        for pname, name in owned.items():
            p = getattr(m, pname)
            s1, m2 = moments.get(pname, (torch.zeros_like(p), torch.zeros_like(p)))
            mean[name] = s1 / n
            se[name] = (m2.clamp_min(0.0) / ((n - 1) * n)).sqrt()
    order = list(_trainable(model))
    return GradStats({k_: mean[k_] for k_ in order}, {k_: se[k_] for k_ in order}, float(total))


def _microbatch_fast(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    inputs: Tensor,
    targets: Tensor,
    k: int,
) -> GradStats:
    """:func:`_microbatch` in one forward and one backward pass (:func:`_chunk_gradients`)."""
    sizes = [len(c) for c in torch.tensor_split(torch.arange(inputs.shape[0]), k)]
    chunks, loss, weights = _chunk_gradients(model, loss_fn, inputs, targets, sizes)
    mean, se = {}, {}
    for name in _trainable(model):  # the model's order, as the loop's
        c = chunks[name]
        w = c.new_tensor(weights).view(-1, *([1] * (c.dim() - 1)))
        mean[name] = c.sum(0)
        m2 = (w * (c / w - mean[name]) ** 2).sum(0)
        se[name] = (m2.clamp_min(0.0) / (k - 1)).sqrt()
    return GradStats(mean, se, float(loss))


#: Estimator name to function ``(model, loss_fn, inputs, targets, k) -> GradStats``.
_ESTIMATORS = {"microbatch": _microbatch, "per_sample": _per_sample}

#: The one-backward-pass estimators, exact where they apply (else :class:`_NotSeparable`).
_FAST_ESTIMATORS = {"microbatch": _microbatch_fast, "per_sample": _per_sample_fast}


def grad_stats(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    inputs: Tensor,
    targets: Tensor,
    *,
    method: str = "microbatch",
    k: int = 8,
    fast: bool = True,
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

    Fast path (``fast=True``, the default): for ``"microbatch"``, when every trainable
    parameter belongs to a Linear, Conv2d or BatchNorm layer, the batch runs forward once and
    backward once, and each chunk's gradient of each weight is formed from that chunk's rows of
    the layer's input and of the gradient at its output (for Conv2d, the weight gradient of the
    chunk, ``torch.nn.grad.conv2d_weight``); autograd never forms the weights' gradients. It is
    the same estimator, equal to the loop of chunks within floating-point rounding: BatchNorm
    that normalises by batch statistics (training mode) normalises each chunk by its own
    statistics in that one pass, as the loop of chunks does, and the per-chunk gradients of its
    scale and shift are :math:`\\sum g\\,\\hat x` and :math:`\\sum g` over the chunk's rows,
    with :math:`\\hat x` from the chunk's statistics (the running ones in eval mode). The model
    must be deterministic for the two to agree draw for draw (dropout would draw other masks).
    Any other parameterised layer, a layer called twice, or an input or output changed in place
    falls back to the loop. ``fast=False`` always runs the loop (the reference).

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
        fast: use the one-backward-pass path where it applies (see above).

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
            if fast and method in _FAST_ESTIMATORS:
                try:
                    return _FAST_ESTIMATORS[method](model, loss_fn, inputs, targets, k)
                except _NotSeparable:
                    pass  # a case the fast path does not cover: the loop below
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
            state = leaf.detach().square().mul_(1.0 - rho)  # (1 - rho) * g**2
            return state.add(eps).sqrt_(), state

        return tree_map_pair(first, g)

    def later(leaf: Tensor, prev: Tensor) -> tuple[Tensor, Tensor]:
        state = leaf.detach().square().mul_(rho).add_((1.0 - rho) * prev)  # rho g**2 + (1-rho) V
        return state.add(eps).sqrt_(), state

    return tree_map_pair(later, g, v)
