"""Aggregators, masks and the focus vector of feasible updates, as pure functions on tensors."""
from __future__ import annotations

import functools
import math
import numbers
from typing import Callable, Mapping, NamedTuple, Optional

import torch
from torch import Tensor

from feasible._tree import (
    Tree,
    all_true,
    check_same_structure,
    check_tensors,
    labelled_leaves,
    leaves,
    tree_map,
    tree_map_pair,
)

_SQRT_HALF = 1.0 / math.sqrt(2.0)


# ---------------------------------------------------------------------------------------------
# Validation at the public boundary (STYLE.md section 5). The tensor code below trusts its inputs.
# ---------------------------------------------------------------------------------------------


def _check_probability(caller: str, name: str, value: object) -> None:
    """Raises ValueError unless ``value`` is a real number in the open interval (0, 1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 < value < 1.0:
        raise ValueError(
            f"The '{name}' parameter of {caller} must be a float in the open interval (0, 1). "
            f"Got {value!r} instead."
        )


def _check_weight(caller: str, name: str, value: object) -> None:
    """Raises ValueError unless ``value`` is a finite real number >= 0."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value < 0:
        raise ValueError(
            f"The '{name}' parameter of {caller} must be a finite float >= 0. "
            f"Got {value!r} instead."
        )


def _check_choice(what: str, value: object, options: Mapping[str, object]) -> None:
    """Raises ValueError unless ``value`` is one of the keys of ``options``."""
    if not isinstance(value, str) or value not in options:
        expected = ", ".join(repr(name) for name in options)
        raise ValueError(f"Unknown {what} {value!r}; expected one of {expected}.")


def _check_trees(
    caller: str,
    trees: Mapping[str, Tree],
    *,
    standard_errors: tuple[str, ...] = (),
    masks: tuple[str, ...] = (),
) -> None:
    """Checks types, structures, shapes, finiteness and the sign of standard errors.

    All the value checks are reduced on the device and read back with one synchronisation;
    only when one fails are the leaves inspected again to name the culprit.

    Args:
        caller: the public function's name, for messages.
        trees: argument name to tree; the first one sets the structure.
        standard_errors: names of the arguments that must also be >= 0.
        masks: names of the arguments that may have any dtype (e.g. bool masks).

    Raises:
        TypeError: a leaf is not a tensor, or a gradient is not floating point.
        ValueError: structures or shapes differ, a value is NaN or inf, or a standard error
            is negative.
    """
    for name, tree in trees.items():
        check_tensors(caller, name, tree, floating=name not in masks)
    check_same_structure(caller, trees)
    flags = []
    for name, tree in trees.items():
        if name in masks:
            continue
        for leaf in leaves(tree):
            flag = torch.isfinite(leaf).all()
            if name in standard_errors:
                flag = flag & (leaf >= 0).all()
            flags.append(flag)
    if all_true(flags):
        return
    for name, tree in trees.items():
        if name in masks:
            continue
        for label, leaf in labelled_leaves(tree, name):
            if not bool(torch.isfinite(leaf).all()):
                raise ValueError(
                    f"The '{name}' argument of {caller} must be finite. "
                    f"Got NaN or inf in {label} instead."
                )
            if name in standard_errors and bool((leaf < 0).any()):
                raise ValueError(
                    f"The '{name}' argument of {caller} must be >= 0 (a standard error). "
                    f"Got {leaf.min().item():.4g} in {label} instead."
                )


# ---------------------------------------------------------------------------------------------
# Per-tensor formulas (private: inputs already validated).
# ---------------------------------------------------------------------------------------------


def _lin(g_u: Tensor, g_c: Tensor, alpha: float, beta: float) -> Tensor:
    return alpha * g_u + beta * g_c


def _min(g_u: Tensor, g_c: Tensor, alpha: float, beta: float) -> Tensor:
    weighted_u, weighted_c = alpha * g_u, beta * g_c
    return torch.where(weighted_u.abs() <= weighted_c.abs(), weighted_u, weighted_c)


def _agree(g_u: Tensor, g_c: Tensor) -> Tensor:
    # Signs, not the product: g_u * g_c underflows to 0 for tiny gradients.
    return torch.sign(g_u) * torch.sign(g_c) > 0


def _phi(g: Tensor, se: Tensor) -> Tensor:
    positive = se > 0
    z = g / torch.where(positive, se, torch.ones_like(se))
    return torch.where(positive, torch.special.ndtr(z), 0.5 * (1.0 + torch.sign(g)))


def _centred_phi(g: Tensor, se: Tensor) -> Tensor:
    """phi - 1/2 through erf, which keeps the sign and relative precision near 1/2."""
    positive = se > 0
    z = g / torch.where(positive, se, torch.ones_like(se))
    return torch.where(positive, 0.5 * torch.erf(z * _SQRT_HALF), 0.5 * torch.sign(g))


def _prob_keep(g_u: Tensor, g_c: Tensor, d_u: Tensor, d_c: Tensor, p: float) -> Tensor:
    """P >= p in centred form, P - 1/2 = 2 d_u d_c; exact sign agreement decides p >= 1/2."""
    keep = 2.0 * d_u * d_c >= p - 0.5
    if p >= 0.5:
        keep = keep & (torch.sign(g_u) * torch.sign(g_c) >= 0)
    return keep


def _signed_focus(d_u: Tensor, d_c: Tensor, p: float) -> Tensor:
    del p  # the default focus vector has no threshold
    return d_u + d_c


def _soft_weight(d_u: Tensor, d_c: Tensor, p: float) -> Tensor:
    return ((2.0 * d_u * d_c - (p - 0.5)) / (1.0 - p)).clamp(0.0, 1.0)


def _times_abs(factor: Tensor, a: Tensor) -> Tensor:
    return factor * a.abs()


class _FocusVariant(NamedTuple):
    """A focus variant: its per-coordinate factor and how the factor meets the aggregate."""

    factor: Callable[[Tensor, Tensor, float], Tensor]
    apply: Callable[[Tensor, Tensor], Tensor]


#: Focus variants by name (THEORY.md section 5); "default" gives u = f * abs(a) and "soft" u = w * a.
FOCUS_VARIANTS: dict[str, _FocusVariant] = {
    "default": _FocusVariant(_signed_focus, _times_abs),
    "soft": _FocusVariant(_soft_weight, torch.mul),
}


# ---------------------------------------------------------------------------------------------
# Public functions: validate, then map the formulas over the tree.
# ---------------------------------------------------------------------------------------------


def lin_g(g_u: Tree, g_c: Tree, alpha: float = 1.0, beta: float = 1.0) -> Tree:
    """Aggregates two gradients linearly: ``alpha * g_u + beta * g_c`` (linG).

    With ``alpha, beta >= 0`` the aggregate keeps the common sign on every coordinate where
    both gradients agree, so an AND or PROB mask (with ``p >= 1/2``) makes it feasible.

    References:
        Dine, Furon, Faure (2025), Figs. 1-2; THEORY.md section 2 (*reading*).

    Args:
        g_u: the unlearning gradient: a tensor, or a list or dict of tensors.
        g_c: the constraint gradient, same structure and shapes as ``g_u``.
        alpha: weight of ``g_u``, must be >= 0.
        beta: weight of ``g_c``, must be >= 0.

    Returns:
        The aggregate, same structure and shapes as ``g_u``.

    Raises:
        ValueError: a negative weight, mismatched structures or shapes, NaN or inf.
        TypeError: a leaf that is not a floating-point tensor.
    """
    _check_weight("lin_g", "alpha", alpha)
    _check_weight("lin_g", "beta", beta)
    _check_trees("lin_g", {"g_u": g_u, "g_c": g_c})
    return tree_map(functools.partial(_lin, alpha=alpha, beta=beta), g_u, g_c)


def min_g(g_u: Tree, g_c: Tree, alpha: float = 1.0, beta: float = 1.0) -> Tree:
    """Aggregates two gradients by the smaller weighted component per coordinate (MinG).

    Coordinate ``i`` gets ``alpha * g_u[i]`` where
    :math:`\\alpha \\lvert g_{U,i} \\rvert \\le \\beta \\lvert g_{C,i} \\rvert`, else
    ``beta * g_c[i]``, each with its own sign (ties go to ``g_u``). With ``alpha = 0`` the
    aggregate is 0 everywhere.

    References:
        Dine, Furon, Faure (2025), Fig. 1; THEORY.md section 2 (*reading*: the paper's
        equation is not available; the MGDA min-norm point is the named alternative).

    Args:
        g_u: the unlearning gradient: a tensor, or a list or dict of tensors.
        g_c: the constraint gradient, same structure and shapes as ``g_u``.
        alpha: weight of ``g_u``, must be >= 0.
        beta: weight of ``g_c``, must be >= 0.

    Returns:
        The aggregate, same structure and shapes as ``g_u``.

    Raises:
        ValueError: a negative weight, mismatched structures or shapes, NaN or inf.
        TypeError: a leaf that is not a floating-point tensor.
    """
    _check_weight("min_g", "alpha", alpha)
    _check_weight("min_g", "beta", beta)
    _check_trees("min_g", {"g_u": g_u, "g_c": g_c})
    return tree_map(functools.partial(_min, alpha=alpha, beta=beta), g_u, g_c)


def and_mask(g_u: Tree, g_c: Tree) -> Tree:
    """Keeps the coordinates where both gradients have the same strict sign (the AND mask).

    :math:`m_i = 1\\{\\hat g_{U,i} \\hat g_{C,i} > 0\\}`, evaluated on the signs so that tiny
    gradients do not underflow. A coordinate where either gradient is exactly 0 is dropped.

    References:
        Dine, Furon, Faure (2025), Def. 1 and Prop. 2; THEORY.md section 3.

    Args:
        g_u: the unlearning gradient: a tensor, or a list or dict of tensors.
        g_c: the constraint gradient, same structure and shapes as ``g_u``.

    Returns:
        A bool mask, same structure and shapes as ``g_u``.

    Raises:
        ValueError: mismatched structures or shapes, NaN or inf.
        TypeError: a leaf that is not a floating-point tensor.
    """
    _check_trees("and_mask", {"g_u": g_u, "g_c": g_c})
    return tree_map(_agree, g_u, g_c)


def phi(g: Tree, se: Tree) -> Tree:
    """The posterior probability that the true gradient is positive, :math:`\\Phi(g / s)`.

    Under the noise model :math:`\\hat g = g + n`, :math:`n \\sim N(0, s^2)` with a flat prior,
    :math:`P[g_i > 0 \\mid \\hat g] = \\Phi(\\hat g_i / s_i)`. Where ``se == 0`` the estimate
    is exact: the result is 1 where ``g > 0``, 0 where ``g < 0`` and 1/2 where ``g == 0``.
    Where ``g == 0`` (and ``se > 0``) the result is 1/2.

    References:
        Dine, Furon, Faure (2025), Prop. 4; THEORY.md section 4 (edge cases: *reading*).

    Args:
        g: the gradient estimate: a tensor, or a list or dict of tensors.
        se: its standard error, same structure and shapes, every entry >= 0.

    Returns:
        Probabilities in [0, 1], same structure and shapes as ``g``.

    Raises:
        ValueError: mismatched structures or shapes, NaN or inf, or a negative ``se``.
        TypeError: a leaf that is not a floating-point tensor.
    """
    _check_trees("phi", {"g": g, "se": se}, standard_errors=("se",))
    return tree_map(_phi, g, se)


def agreement_probability(g_u: Tree, g_c: Tree, se_u: Tree, se_c: Tree) -> Tree:
    """The probability that the true gradients agree in sign on each coordinate (Prop. 4).

    With independent batches for the two losses,
    :math:`P_i = \\varphi_U \\varphi_C + (1 - \\varphi_U)(1 - \\varphi_C)
    = 1/2 + 2 (\\varphi_U - 1/2)(\\varphi_C - 1/2)`, where
    :math:`\\varphi = \\Phi(\\hat g / s)` (see :func:`phi`). A coordinate with an exactly zero
    estimate has :math:`\\varphi = 1/2`, hence :math:`P = 1/2`.

    References:
        Dine, Furon, Faure (2025), Prop. 4 and Fig. 4; THEORY.md section 4.

    Args:
        g_u: estimate of the unlearning gradient: a tensor, or a list or dict of tensors.
        g_c: estimate of the constraint gradient, same structure and shapes.
        se_u: standard error of ``g_u``, same structure and shapes, >= 0.
        se_c: standard error of ``g_c``, same structure and shapes, >= 0.

    Returns:
        :math:`P` in [0, 1], same structure and shapes as ``g_u``.

    Raises:
        ValueError: mismatched structures or shapes, NaN or inf, or a negative standard error.
        TypeError: a leaf that is not a floating-point tensor.
    """
    trees = {"g_u": g_u, "g_c": g_c, "se_u": se_u, "se_c": se_c}
    _check_trees("agreement_probability", trees, standard_errors=("se_u", "se_c"))

    def probability(gu: Tensor, gc: Tensor, su: Tensor, sc: Tensor) -> Tensor:
        return 0.5 + 2.0 * _centred_phi(gu, su) * _centred_phi(gc, sc)

    return tree_map(probability, g_u, g_c, se_u, se_c)


def prob_mask(g_u: Tree, g_c: Tree, se_u: Tree, se_c: Tree, p: float = 0.45) -> Tree:
    """Keeps the coordinates whose agreement probability is at least ``p`` (the PROB mask).

    :math:`m_i = 1\\{P_i \\ge p\\}` with :math:`P` of :func:`agreement_probability`. The
    comparison is made on :math:`P - 1/2`, and for ``p >= 1/2`` also on the exact signs, so
    that ``p = 1/2`` reproduces the AND mask on every coordinate where neither estimate is 0,
    however small the ratio :math:`\\hat g / s`. A coordinate with a zero estimate has
    :math:`P = 1/2`: kept for ``p <= 1/2``, dropped above. ``p < 1/2`` drops only coordinates
    with evidence of disagreement; ``p > 1/2`` keeps only confident agreements.

    References:
        Dine, Furon, Faure (2025), Props. 4-5 and Fig. 4 (``p = 0.45``); THEORY.md section 4
        (Prop. 5 as the project reads it).

    Args:
        g_u: estimate of the unlearning gradient: a tensor, or a list or dict of tensors.
        g_c: estimate of the constraint gradient, same structure and shapes.
        se_u: standard error of ``g_u``, same structure and shapes, >= 0.
        se_c: standard error of ``g_c``, same structure and shapes, >= 0.
        p: the threshold, in the open interval (0, 1).

    Returns:
        A bool mask, same structure and shapes as ``g_u``.

    Raises:
        ValueError: ``p`` outside (0, 1), mismatched structures or shapes, NaN or inf, or a
            negative standard error.
        TypeError: a leaf that is not a floating-point tensor.
    """
    _check_probability("prob_mask", "p", p)
    trees = {"g_u": g_u, "g_c": g_c, "se_u": se_u, "se_c": se_c}
    _check_trees("prob_mask", trees, standard_errors=("se_u", "se_c"))

    def keep(gu: Tensor, gc: Tensor, su: Tensor, sc: Tensor) -> Tensor:
        return _prob_keep(gu, gc, _centred_phi(gu, su), _centred_phi(gc, sc), p)

    return tree_map(keep, g_u, g_c, se_u, se_c)


def focus(
    g_u: Tree,
    g_c: Tree,
    se_u: Tree,
    se_c: Tree,
    *,
    variant: str = "default",
    p: float = 0.45,
) -> Tree:
    """The focus vector: a per-coordinate factor that weighs the update by its evidence.

    ``variant="default"``: :math:`f = \\varphi_U + \\varphi_C - 1 \\in [-1, 1]`, the posterior
    mean of :math:`(\\mathrm{sgn}\\, g_U + \\mathrm{sgn}\\, g_C)/2`; the focus update is
    :math:`u = f \\odot \\lvert a \\rvert`. Its sign is the most probable common sign,
    :math:`\\lvert f \\rvert \\le P`, and :math:`f = 0` exactly where
    :math:`\\varphi_U = 1 - \\varphi_C` (e.g. both estimates 0). ``p`` is not used.

    ``variant="soft"``: :math:`w = \\mathrm{clip}((P - p)/(1 - p), 0, 1)`, a soft PROB mask
    with :math:`u = w \\odot a`; :math:`w > 0` exactly where :math:`P > p`.

    References:
        Dine, Furon, Faure (2025), Props. 6-7; THEORY.md section 5 (*reading*: the paper's
        definition is not available; "default" is candidate A, "soft" candidate B).

    Args:
        g_u: estimate of the unlearning gradient: a tensor, or a list or dict of tensors.
        g_c: estimate of the constraint gradient, same structure and shapes.
        se_u: standard error of ``g_u``, same structure and shapes, >= 0.
        se_c: standard error of ``g_c``, same structure and shapes, >= 0.
        variant: ``"default"`` or ``"soft"``.
        p: the soft variant's threshold, in the open interval (0, 1).

    Returns:
        The factor (``f`` in [-1, 1] or ``w`` in [0, 1]), same structure and shapes as ``g_u``.

    Raises:
        ValueError: an unknown variant, ``p`` outside (0, 1), mismatched structures or shapes,
            NaN or inf, or a negative standard error.
        TypeError: a leaf that is not a floating-point tensor.
    """
    _check_choice("focus variant", variant, FOCUS_VARIANTS)
    _check_probability("focus", "p", p)
    trees = {"g_u": g_u, "g_c": g_c, "se_u": se_u, "se_c": se_c}
    _check_trees("focus", trees, standard_errors=("se_u", "se_c"))
    factor = FOCUS_VARIANTS[variant].factor

    def leaf_factor(gu: Tensor, gc: Tensor, su: Tensor, sc: Tensor) -> Tensor:
        return factor(_centred_phi(gu, su), _centred_phi(gc, sc), p)

    return tree_map(leaf_factor, g_u, g_c, se_u, se_c)


def saliency_mask(grads: Tree, fraction: float = 0.5) -> Tree:
    """Keeps the globally largest ``fraction`` of the gradient's magnitudes (SalUn's mask).

    All tensors are ranked together by :math:`\\lvert g \\rvert`; exactly
    ``round(fraction * numel)`` coordinates are kept (Python's ``round``), ties broken by
    position: earlier tensors first, then row-major order. The ranking is done on the first
    tensor's device; each mask is returned on its own tensor's device.

    References:
        Fan et al., SalUn (ICLR 2024); THEORY.md section 6 (the documented top fraction; the
        public SalUn code may keep the smallest).

    Args:
        grads: the saliency gradient, e.g. the gradient of the forget loss at the original
            model: a tensor, or a list or dict of tensors.
        fraction: the share of coordinates kept, in (0, 1].

    Returns:
        A bool mask, same structure and shapes as ``grads``.

    Raises:
        ValueError: ``fraction`` outside (0, 1], or NaN or inf in ``grads``.
        TypeError: a leaf that is not a floating-point tensor.
    """
    ok = isinstance(fraction, numbers.Real) and not isinstance(fraction, bool)
    if not ok or not 0.0 < fraction <= 1.0:
        raise ValueError(
            "The 'fraction' parameter of saliency_mask must be a float in the interval (0, 1]. "
            f"Got {fraction!r} instead."
        )
    _check_trees("saliency_mask", {"grads": grads})
    flat = [leaf.detach().abs().reshape(-1) for leaf in leaves(grads)]
    sizes = [part.numel() for part in flat]
    total = sum(sizes)
    if total == 0:
        return tree_map(lambda leaf: torch.zeros_like(leaf, dtype=torch.bool), grads)
    device = flat[0].device
    scores = torch.cat([part.to(device) for part in flat])
    n_keep = round(fraction * total)
    order = torch.sort(scores, descending=True, stable=True).indices[:n_keep]
    kept = torch.zeros(total, dtype=torch.bool, device=device)
    kept[order] = True
    pieces = iter(torch.split(kept, sizes))
    return tree_map(lambda leaf: next(pieces).reshape(leaf.shape).to(leaf.device), grads)


# ---------------------------------------------------------------------------------------------
# Algorithm 1: the update direction, an add-on looked up by name.
# ---------------------------------------------------------------------------------------------


#: Aggregator name to function (THEORY.md section 2).
AGGREGATORS: dict[str, Callable[..., Tree]] = {"lin": lin_g, "min": min_g}

_AGGREGATE: dict[str, Callable[[Tensor, Tensor, float, float], Tensor]] = {
    "lin": _lin,
    "min": _min,
}


class AddonInputs(NamedTuple):
    """What an add-on sees on one tensor: the aggregate and the validated inputs."""

    #: The aggregate ``Agg(g_u, g_c)``.
    a: Tensor
    #: The unlearning gradient estimate.
    g_u: Tensor
    #: The constraint gradient estimate.
    g_c: Tensor
    #: The standard error of ``g_u``, or None when not given.
    se_u: Optional[Tensor]
    #: The standard error of ``g_c``, or None when not given.
    se_c: Optional[Tensor]
    #: The static saliency mask, or None when not given.
    saliency: Optional[Tensor]


def _masked(a: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
    return a.masked_fill(~keep, 0.0), keep


def _addon_none(x: AddonInputs, p: float, focus_variant: str) -> tuple[Tensor, Tensor]:
    del p, focus_variant
    return x.a, torch.ones_like(x.a, dtype=torch.bool)


def _addon_salun(x: AddonInputs, p: float, focus_variant: str) -> tuple[Tensor, Tensor]:
    del p, focus_variant
    return _masked(x.a, x.saliency.to(torch.bool))


def _addon_and(x: AddonInputs, p: float, focus_variant: str) -> tuple[Tensor, Tensor]:
    del p, focus_variant
    return _masked(x.a, _agree(x.g_u, x.g_c))


def _addon_prob(x: AddonInputs, p: float, focus_variant: str) -> tuple[Tensor, Tensor]:
    del focus_variant
    d_u, d_c = _centred_phi(x.g_u, x.se_u), _centred_phi(x.g_c, x.se_c)
    return _masked(x.a, _prob_keep(x.g_u, x.g_c, d_u, d_c, p))


def _addon_focus(x: AddonInputs, p: float, focus_variant: str) -> tuple[Tensor, Tensor]:
    variant = FOCUS_VARIANTS[focus_variant]
    factor = variant.factor(_centred_phi(x.g_u, x.se_u), _centred_phi(x.g_c, x.se_c), p)
    return variant.apply(factor, x.a), factor != 0


#: Add-on name to its per-tensor rule ``(AddonInputs, p, focus_variant) -> (direction, keep)``
#: (THEORY.md section 9). Use its keys to validate a name.
ADDONS: dict[str, Callable[[AddonInputs, float, str], tuple[Tensor, Tensor]]] = {
    "none": _addon_none,
    "salun": _addon_salun,
    "and": _addon_and,
    "prob": _addon_prob,
    "focus": _addon_focus,
}

_REQUIRES: dict[str, tuple[str, ...]] = {
    "none": (),
    "salun": ("saliency",),
    "and": (),
    "prob": ("se_u", "se_c"),
    "focus": ("se_u", "se_c"),
}

_WHAT = {
    "se_u": "the standard error of g_u, e.g. from grad_stats",
    "se_c": "the standard error of g_c, e.g. from grad_stats",
    "saliency": "a bool mask, e.g. from saliency_mask",
}


class Update(NamedTuple):
    """The result of :func:`feasible_update`: the direction and the coordinates it may move."""

    #: The update direction ``u``, structured like ``g_u``; descend: ``theta - lr * u``.
    direction: Tree
    #: Bool, structured like ``g_u``: the coordinates the step may move. The optimiser must
    #: leave the others unchanged (no momentum or weight-decay leak; THEORY.md section 7).
    keep: Tree


def _global_norm(tree: Tree) -> Tensor:
    norms = [
        torch.linalg.vector_norm(leaf, dtype=torch.promote_types(leaf.dtype, torch.float32))
        for leaf in leaves(tree)
    ]
    dtype = functools.reduce(torch.promote_types, [n.dtype for n in norms])
    return torch.linalg.vector_norm(torch.stack([n.to(norms[0].device, dtype) for n in norms]))


def _rescale(direction: Tree, a: Tree) -> Tree:
    """Scales ``direction`` to the global L2 norm of ``a``; a zero direction stays zero."""
    if not leaves(direction):
        return direction
    norm_u, norm_a = _global_norm(direction), _global_norm(a)
    scale = torch.where(norm_u > 0, norm_a / norm_u, torch.zeros_like(norm_u))
    return tree_map(lambda u: u * scale.to(u.device, u.dtype), direction)


def _update(
    caller: str,
    g_u: Tree,
    g_c: Tree,
    se_u: Optional[Tree],
    se_c: Optional[Tree],
    *,
    addon: str,
    agg: str,
    alpha: float,
    beta: float,
    p: float,
    saliency: Optional[Tree],
    focus_variant: str,
    renorm: bool,
) -> Update:
    _check_choice("add-on", addon, ADDONS)
    _check_choice("aggregator", agg, AGGREGATORS)
    _check_choice("focus variant", focus_variant, FOCUS_VARIANTS)
    _check_probability(caller, "p", p)
    _check_weight(caller, "alpha", alpha)
    _check_weight(caller, "beta", beta)
    if not isinstance(renorm, bool):
        raise TypeError(
            f"The 'renorm' parameter of {caller} must be a bool. Got {renorm!r} instead."
        )
    optional = {"se_u": se_u, "se_c": se_c, "saliency": saliency}
    for name in _REQUIRES[addon]:
        if optional[name] is None:
            raise ValueError(
                f"The '{name}' parameter of {caller} is required for add-on '{addon}' "
                f"({_WHAT[name]}). Got None instead."
            )
    given = {name: tree for name, tree in optional.items() if tree is not None}
    _check_trees(
        caller,
        {"g_u": g_u, "g_c": g_c, **given},
        standard_errors=("se_u", "se_c"),
        masks=("saliency",),
    )

    aggregate = functools.partial(_AGGREGATE[agg], alpha=alpha, beta=beta)
    rule = ADDONS[addon]
    nothing = tree_map(lambda _: None, g_u)

    def step(gu: Tensor, gc: Tensor, su: Optional[Tensor], sc: Optional[Tensor],
             sal: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        return rule(AddonInputs(aggregate(gu, gc), gu, gc, su, sc, sal), p, focus_variant)

    direction, keep = tree_map_pair(
        step,
        g_u,
        g_c,
        nothing if se_u is None else se_u,
        nothing if se_c is None else se_c,
        nothing if saliency is None else saliency,
    )
    if renorm:
        direction = _rescale(direction, tree_map(aggregate, g_u, g_c))
    return Update(direction, keep)


def feasible_update(
    g_u: Tree,
    g_c: Tree,
    se_u: Optional[Tree] = None,
    se_c: Optional[Tree] = None,
    *,
    addon: str = "prob",
    agg: str = "lin",
    alpha: float = 1.0,
    beta: float = 1.0,
    p: float = 0.45,
    saliency: Optional[Tree] = None,
    focus_variant: str = "default",
    renorm: bool = False,
) -> Update:
    """The update direction of Algorithm 1 and the coordinates it may move.

    With :math:`a = \\mathrm{Agg}(\\hat g_U, \\hat g_C)` (``agg``: ``"lin"`` or ``"min"``),
    the direction is ``a`` for ``addon="none"``, ``saliency * a`` for ``"salun"``,
    ``and_mask * a`` for ``"and"``, ``prob_mask * a`` for ``"prob"``, and for ``"focus"``
    ``f * abs(a)`` (default variant) or ``w * a`` (``focus_variant="soft"``); see
    :func:`focus`. ``keep`` is all True for ``"none"``, the mask for ``"salun"``, ``"and"``
    and ``"prob"``, and for ``"focus"`` the coordinates where the factor is non-zero.
    ``renorm=True`` rescales the direction to the global L2 norm of the unmasked ``a``
    (a zero direction stays zero). Inputs are never modified; every output is on its input's
    device.

    References:
        Dine, Furon, Faure (2025), Algorithm 1 and Figs. 1-5; THEORY.md section 9 (*reading*);
        the renorm variant is DESIGN.md's, not the paper's.

    Args:
        g_u: estimate of the unlearning gradient: a tensor, or a list or dict of tensors.
        g_c: estimate of the constraint gradient, same structure and shapes.
        se_u: standard error of ``g_u`` (same structure, >= 0); required for ``"prob"`` and
            ``"focus"``, validated whenever given.
        se_c: standard error of ``g_c``, likewise.
        addon: one of ``"none"``, ``"salun"``, ``"and"``, ``"prob"``, ``"focus"``.
        agg: ``"lin"`` (:func:`lin_g`) or ``"min"`` (:func:`min_g`).
        alpha: weight of ``g_u``, >= 0.
        beta: weight of ``g_c``, >= 0.
        p: the PROB threshold (and the soft focus threshold), in (0, 1).
        saliency: the static mask (nonzero means kept, e.g. from :func:`saliency_mask`), same
            structure; required for ``"salun"``.
        focus_variant: ``"default"`` or ``"soft"``.
        renorm: rescale the direction to the norm of the unmasked aggregate.

    Returns:
        ``Update(direction, keep)``, each structured like ``g_u``.

    Raises:
        ValueError: an unknown name, ``p`` outside (0, 1), a negative weight, a missing
            ``se_u``/``se_c``/``saliency``, mismatched structures or shapes, NaN or inf, or a
            negative standard error.
        TypeError: a leaf that is not a tensor, or a non-bool ``renorm``.
    """
    return _update(
        "feasible_update", g_u, g_c, se_u, se_c, addon=addon, agg=agg, alpha=alpha,
        beta=beta, p=p, saliency=saliency, focus_variant=focus_variant, renorm=renorm,
    )


def feasible_direction(
    g_u: Tree,
    g_c: Tree,
    se_u: Optional[Tree] = None,
    se_c: Optional[Tree] = None,
    *,
    addon: str = "prob",
    agg: str = "lin",
    alpha: float = 1.0,
    beta: float = 1.0,
    p: float = 0.45,
    saliency: Optional[Tree] = None,
    focus_variant: str = "default",
    renorm: bool = False,
) -> Tree:
    """The update direction ``u`` of Algorithm 1: ``feasible_update(...).direction``.

    The one call a training loop needs: step ``theta - lr * u``. To freeze the masked
    coordinates under momentum or weight decay, use :func:`feasible_update`'s ``keep``.

    References:
        Dine, Furon, Faure (2025), Algorithm 1; THEORY.md section 9 (*reading*).

    Args:
        g_u: estimate of the unlearning gradient: a tensor, or a list or dict of tensors.
        g_c: estimate of the constraint gradient, same structure and shapes.
        se_u: standard error of ``g_u``; required for ``"prob"`` and ``"focus"``.
        se_c: standard error of ``g_c``; required for ``"prob"`` and ``"focus"``.
        addon: one of ``"none"``, ``"salun"``, ``"and"``, ``"prob"``, ``"focus"``.
        agg: ``"lin"`` or ``"min"``.
        alpha: weight of ``g_u``, >= 0.
        beta: weight of ``g_c``, >= 0.
        p: the PROB threshold, in (0, 1).
        saliency: the static mask, required for ``"salun"``.
        focus_variant: ``"default"`` or ``"soft"``.
        renorm: rescale the direction to the norm of the unmasked aggregate.

    Returns:
        The direction, structured like ``g_u``.

    Raises:
        ValueError: as :func:`feasible_update`.
        TypeError: as :func:`feasible_update`.
    """
    return _update(
        "feasible_direction", g_u, g_c, se_u, se_c, addon=addon, agg=agg, alpha=alpha,
        beta=beta, p=p, saliency=saliency, focus_variant=focus_variant, renorm=renorm,
    ).direction
