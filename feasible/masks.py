"""Aggregators, masks, the focus vector and the add-ons of feasible updates, on tensors.

Every public function takes one tensor, or a list, tuple or dict of tensors (one per parameter),
and returns the same structure. Sources are named in each docstring: the paper (Dine, Furon,
Faure 2025, by proposition), the first author's public code (``owl1996/UnlearningFocusVector``
on GitHub, by file), the first author's blog (``owl1996/weblog``, by post), or *this project's
reading* where none of them settles a choice.
"""
from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass
from typing import Callable, Mapping, NamedTuple, Optional

import torch
from torch import Tensor

from feasible._tree import (
    Tree,
    check_trees,
    leaves,
    tree_map,
    tree_map_pair,
)

_SQRT_HALF = 1.0 / math.sqrt(2.0)
_SE = "a standard error"


# ---------------------------------------------------------------------------------------------
# Validation at the public boundary. The tensor code below trusts its inputs.
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


def _check_bool(caller: str, name: str, value: object) -> None:
    """Raises TypeError unless ``value`` is a bool."""
    if not isinstance(value, bool):
        raise TypeError(
            f"The '{name}' parameter of {caller} must be a bool. Got {value!r} instead."
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
    """phi - 1/2 through erf, which keeps the sign and relative precision near 1/2.

    One buffer, worked in place: ``0.5 * erf(g / se / sqrt 2)``. Where ``se = 0`` the quotient
    is ``+-inf`` and ``erf`` gives ``+-1``, i.e. ``0.5 * sign(g)``, except ``0 / 0``, whose NaN
    becomes ``0 = 0.5 * sign(0)`` (inputs are finite: the callers check them).
    """
    z = torch.div(g, se)
    z.mul_(_SQRT_HALF).erf_().mul_(0.5)
    return z.nan_to_num_(nan=0.0, posinf=0.5, neginf=-0.5)


def _probability(d_u: Tensor, d_c: Tensor, p: float = 0.5) -> Tensor:
    """P = phi_U phi_C + (1 - phi_U)(1 - phi_C) = 1/2 + 2 d_u d_c, with d = phi - 1/2."""
    del p  # the probability has no threshold
    return 0.5 + 2.0 * d_u * d_c


def _prob_keep(g_u: Tensor, g_c: Tensor, d_u: Tensor, d_c: Tensor, p: float) -> Tensor:
    """P >= p in centred form, P - 1/2 = 2 d_u d_c; exact sign agreement decides p >= 1/2."""
    product = (2.0 * d_u).mul_(d_c)  # 2.0 * d_u * d_c, one buffer
    keep = product >= p - 0.5
    if p >= 0.5:
        keep = keep & (torch.sign(g_u) * torch.sign(g_c) >= 0)
    return keep


def _signed_focus(d_u: Tensor, d_c: Tensor, p: float) -> Tensor:
    del p  # the signed focus vector has no threshold
    return d_u + d_c


def _soft_weight(d_u: Tensor, d_c: Tensor, p: float) -> Tensor:
    return ((2.0 * d_u * d_c - (p - 0.5)) / (1.0 - p)).clamp(0.0, 1.0)


def _times_abs(factor: Tensor, a: Tensor) -> Tensor:
    return factor * a.abs()


def _certify(u: Tensor, g_u: Tensor, g_c: Tensor, weight: Optional[Tensor]) -> Tensor:
    """The certified keep-mask of one tensor (see :func:`certified_mask`), vectorised.

    Coordinates are removed in the order of ``weight * g_u * g_c`` (most negative first, a
    stable sort); the cut-off is the shortest prefix after whose removal both remaining sums
    ``sum(u * g_u)`` and ``sum(u * g_c)`` are >= 0. The sums are suffix sums of the sorted
    contributions in float64 (at least), so removing every coordinate gives exactly 0 and a
    cut-off always exists.
    """
    n = u.numel()
    if n == 0:
        return torch.ones_like(u, dtype=torch.bool)
    acc = torch.promote_types(u.dtype, torch.float64)
    uu, gu, gc = (t.reshape(-1).to(acc) for t in (u, g_u, g_c))
    key = gu * gc if weight is None else weight.reshape(-1).to(acc) * gu * gc
    order = torch.sort(key, stable=True).indices
    zero = torch.zeros(1, dtype=acc, device=u.device)

    def remaining(contribution: Tensor) -> Tensor:
        # remaining[k] = sum of the sorted contributions from position k on; remaining[n] = 0.
        tail = contribution[order].flip(0).cumsum(0).flip(0)
        return torch.cat([tail, zero])

    ok = (remaining(uu * gu) >= 0) & (remaining(uu * gc) >= 0)
    cut = torch.argmax(ok.to(torch.uint8))  # the first k that certifies; ok[n] is always True
    keep = torch.ones(n, dtype=torch.bool, device=u.device)
    keep[order[:cut]] = False  # the first `cut` in the order go (one host sync, for the slice)
    return keep.reshape(u.shape)


def _midpoint_ranks(n: int, q: float) -> tuple[int, int]:
    """The two ranks (0-based, ascending) whose midpoint is the ``q``-quantile of ``n`` values."""
    position = q * (n - 1)
    nearest = round(position)
    if abs(position - nearest) <= 4 * 2.0**-52 * max(1.0, position):
        position = float(nearest)  # 1 - (1 - q) is q up to rounding: keep an exact rank exact
    return math.floor(position), math.ceil(position)


#: How :func:`saliency_mask` with ``per_tensor=True`` (``salun_step``) finds each tensor's
#: threshold, by name: all three give the same value (the two order statistics around the
#: quantile are the same numbers); ``python -m feasible bench`` times them
#: (:func:`feasible.bench.selection_cost`). ``"kthvalue"``: two selections (quickselect on the
#: CPU), no full sort; ``"topk"``: the smaller side's top-k; ``"sort"``: a full sort.
QUANTILE_SELECTIONS: tuple[str, ...] = ("kthvalue", "topk", "sort")

#: The selection in use, the bench's fastest on this project's CPU (see the Cost page).
QUANTILE_SELECTION = "kthvalue"


def _quantile_threshold(scores: Tensor, q: float, how: str = QUANTILE_SELECTION) -> Tensor:
    """The midpoint ``q``-quantile of a flat tensor, by ``how`` (:data:`QUANTILE_SELECTIONS`)."""
    n = scores.numel()
    low, high = _midpoint_ranks(n, q)
    if how == "sort":
        ordered = torch.sort(scores).values
        return torch.lerp(ordered[low], ordered[high], 0.5)
    if how == "kthvalue":
        at_low = torch.kthvalue(scores, low + 1).values
        at_high = at_low if high == low else torch.kthvalue(scores, high + 1).values
        return torch.lerp(at_low, at_high, 0.5)
    if high + 1 <= n - low:  # the smallest high + 1 values hold both ranks, in ascending order
        smallest = torch.topk(scores, high + 1, largest=False, sorted=True).values
        return torch.lerp(smallest[low], smallest[high], 0.5)
    largest = torch.topk(scores, n - low, largest=True, sorted=True).values  # descending
    return torch.lerp(largest[n - 1 - low], largest[n - 1 - high], 0.5)


def _top_fraction_per_tensor(g: Tensor, fraction: float) -> Tensor:
    """``|g| >= q``-quantile of ``|g|`` (midpoint) with ``q = 1 - fraction``, in one tensor."""
    if g.numel() == 0:
        return torch.zeros_like(g, dtype=torch.bool)
    scores = g.detach().abs()
    return scores >= _quantile_threshold(scores.reshape(-1), 1.0 - fraction)


def _top_fraction_global(grads: Tree, fraction: float) -> Tree:
    """Exactly ``round(fraction * numel)`` largest magnitudes over all tensors together."""
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


@dataclass(frozen=True)
class FocusVariant:
    """A focus variant: its per-coordinate factor and how the factor meets the aggregate.

    Attributes:
        name: the variant's name, a key of :data:`FOCUS_VARIANTS`.
        factor: ``(phi_U - 1/2, phi_C - 1/2, p) -> f``, per coordinate.
        apply: ``(f, a) -> u``, the direction from the factor and the aggregate ``a``.
        uses_p: whether the factor reads the threshold ``p``.
        description: one line: the formula and whose it is.
    """

    name: str
    factor: Callable[[Tensor, Tensor, float], Tensor]
    apply: Callable[[Tensor, Tensor], Tensor]
    uses_p: bool
    description: str


#: Focus variants by name. ``"probability"`` (the default) is the authors' focus vector
#: :math:`f = P` with :math:`u = f \odot a`; ``"signed"`` (:math:`f = \varphi_U + \varphi_C - 1`,
#: :math:`u = f \odot \lvert a \rvert`) and ``"soft"`` (a soft PROB mask) are this project's
#: earlier readings, kept as named variants.
FOCUS_VARIANTS: dict[str, FocusVariant] = {
    "probability": FocusVariant(
        "probability", _probability, torch.mul, False,
        "f = P, the agreement probability; u = f * a (the authors' code and blog)"),
    "signed": FocusVariant(
        "signed", _signed_focus, _times_abs, False,
        "f = phi_U + phi_C - 1; u = f * |a| (this project's earlier reading)"),
    "soft": FocusVariant(
        "soft", _soft_weight, torch.mul, True,
        "w = clip((P - p) / (1 - p), 0, 1); u = w * a (this project's reading)"),
}

#: The focus variant used when none is named, the authors' (``"probability"``).
DEFAULT_FOCUS_VARIANT = "probability"


# ---------------------------------------------------------------------------------------------
# Public functions: validate, then map the formulas over the tree.
# ---------------------------------------------------------------------------------------------


def lin_g(g_u: Tree, g_c: Tree, alpha: float = 1.0, beta: float = 1.0) -> Tree:
    """Aggregates two gradients linearly: ``alpha * g_u + beta * g_c`` (linG).

    With ``alpha, beta >= 0`` the aggregate keeps the common sign on every coordinate where
    both gradients agree, so an AND or PROB mask (with ``p >= 1/2``) makes it feasible. The
    authors' code weighs ``(1 - beta) * g_U + beta * g_C`` (``alpha = 1 - beta``).

    References:
        Dine, Furon, Faure (2025), Figs. 1-2; the authors' code (e.g.
        ``unlearn/NGradFocus.py`` in ``owl1996/UnlearningFocusVector``).

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
    check_trees("lin_g", {"g_u": g_u, "g_c": g_c})
    return tree_map(functools.partial(_lin, alpha=alpha, beta=beta), g_u, g_c)


def min_g(g_u: Tree, g_c: Tree, alpha: float = 1.0, beta: float = 1.0) -> Tree:
    """Aggregates two gradients by the smaller weighted component per coordinate (MinG).

    Coordinate ``i`` gets ``alpha * g_u[i]`` where
    :math:`\\alpha \\lvert g_{U,i} \\rvert \\le \\beta \\lvert g_{C,i} \\rvert`, else
    ``beta * g_c[i]``, each with its own sign (ties go to ``g_u``). With ``alpha = 0`` the
    aggregate is 0 everywhere.

    References:
        Dine, Furon, Faure (2025), Fig. 1. This project's reading: the paper's equation is
        not available and the authors' code uses linG only; the MGDA min-norm point is the
        named alternative.

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
    check_trees("min_g", {"g_u": g_u, "g_c": g_c})
    return tree_map(functools.partial(_min, alpha=alpha, beta=beta), g_u, g_c)


def and_mask(g_u: Tree, g_c: Tree) -> Tree:
    """Keeps the coordinates where both gradients have the same strict sign (the AND mask).

    :math:`m_i = 1\\{\\hat g_{U,i} \\hat g_{C,i} > 0\\}`, evaluated on the signs so that tiny
    gradients do not underflow. A coordinate where either gradient is exactly 0 is dropped.

    References:
        Dine, Furon, Faure (2025), Def. 1 and Prop. 2.

    Args:
        g_u: the unlearning gradient: a tensor, or a list or dict of tensors.
        g_c: the constraint gradient, same structure and shapes as ``g_u``.

    Returns:
        A bool mask, same structure and shapes as ``g_u``.

    Raises:
        ValueError: mismatched structures or shapes, NaN or inf.
        TypeError: a leaf that is not a floating-point tensor.
    """
    check_trees("and_mask", {"g_u": g_u, "g_c": g_c})
    return tree_map(_agree, g_u, g_c)


def phi(g: Tree, se: Tree) -> Tree:
    """The posterior probability that the true gradient is positive, :math:`\\Phi(g / s)`.

    Under the noise model :math:`\\hat g = g + n`, :math:`n \\sim N(0, s^2)` with a flat prior,
    :math:`P[g_i > 0 \\mid \\hat g] = \\Phi(\\hat g_i / s_i)`. Where ``se == 0`` the estimate
    is exact: the result is 1 where ``g > 0``, 0 where ``g < 0`` and 1/2 where ``g == 0``.
    Where ``g == 0`` (and ``se > 0``) the result is 1/2. With ``se`` the scale of
    :func:`feasible.noise.ema_scale` this is the authors' :math:`\\varphi`.

    References:
        Dine, Furon, Faure (2025), Prop. 4; the edge cases are this project's reading (the
        authors' scale is never 0).

    Args:
        g: the gradient estimate: a tensor, or a list or dict of tensors.
        se: its standard error, same structure and shapes, every entry >= 0.

    Returns:
        Probabilities in [0, 1], same structure and shapes as ``g``.

    Raises:
        ValueError: mismatched structures or shapes, NaN or inf, or a negative ``se``.
        TypeError: a leaf that is not a floating-point tensor.
    """
    check_trees("phi", {"g": g, "se": se}, nonnegative={"se": _SE})
    return tree_map(_phi, g, se)


def agreement_probability(g_u: Tree, g_c: Tree, se_u: Tree, se_c: Tree) -> Tree:
    """The probability that the true gradients agree in sign on each coordinate (Prop. 4).

    With independent batches for the two losses,
    :math:`P_i = \\varphi_U \\varphi_C + (1 - \\varphi_U)(1 - \\varphi_C)
    = 1/2 + 2 (\\varphi_U - 1/2)(\\varphi_C - 1/2)`, where
    :math:`\\varphi = \\Phi(\\hat g / s)` (see :func:`phi`). A coordinate with an exactly zero
    estimate has :math:`\\varphi = 1/2`, hence :math:`P = 1/2`.

    References:
        Dine, Furon, Faure (2025), Prop. 4 and Fig. 4; the same formula as the authors' code
        (``vmask`` in ``unlearn/NGradMask.py``).

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
    check_trees("agreement_probability", trees, nonnegative={"se_u": _SE, "se_c": _SE})

    def probability(gu: Tensor, gc: Tensor, su: Tensor, sc: Tensor) -> Tensor:
        return _probability(_centred_phi(gu, su), _centred_phi(gc, sc))

    return tree_map(probability, g_u, g_c, se_u, se_c)


def prob_mask(g_u: Tree, g_c: Tree, se_u: Tree, se_c: Tree, p: float = 0.45) -> Tree:
    """Keeps the coordinates whose agreement probability is at least ``p`` (the PROB mask).

    :math:`m_i = 1\\{P_i \\ge p\\}` with :math:`P` of :func:`agreement_probability`. The
    comparison is made on :math:`P - 1/2`, and for ``p >= 1/2`` also on the exact signs, so
    that ``p = 1/2`` reproduces the AND mask on every coordinate where neither estimate is 0,
    however small the ratio :math:`\\hat g / s`. A coordinate with a zero estimate has
    :math:`P = 1/2`: kept for ``p <= 1/2``, dropped above. ``p < 1/2`` drops only coordinates
    with evidence of disagreement; ``p > 1/2`` keeps only confident agreements. ``p`` is an
    absolute threshold on :math:`P`, as the authors' ``quantile`` argument is (their sweeps use
    0.3 and 0.5).

    References:
        Dine, Furon, Faure (2025), Props. 4-5 and Fig. 4 (``p = 0.45``); the authors' code,
        ``unlearn/NGradMask.py`` (``vmask >= args.quantile``).

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
    check_trees("prob_mask", trees, nonnegative={"se_u": _SE, "se_c": _SE})

    def keep(gu: Tensor, gc: Tensor, su: Tensor, sc: Tensor) -> Tensor:
        return _prob_keep(gu, gc, _centred_phi(gu, su), _centred_phi(gc, sc), p)

    return tree_map(keep, g_u, g_c, se_u, se_c)


def focus(
    g_u: Tree,
    g_c: Tree,
    se_u: Tree,
    se_c: Tree,
    *,
    variant: str = DEFAULT_FOCUS_VARIANT,
    p: float = 0.45,
) -> Tree:
    """The focus vector: a per-coordinate factor that weighs the update by its evidence.

    ``variant="probability"`` (the default, the authors'): the focus vector is the agreement
    probability itself, :math:`f = P = \\varphi_U \\varphi_C + (1 - \\varphi_U)(1 - \\varphi_C)
    = \\tfrac12 (1 + \\psi_U \\psi_C)` with :math:`\\psi = 2 \\varphi - 1`, and the focus
    update is :math:`u = f \\odot a` (:math:`a` the aggregate). :math:`f \\in [0, 1]` only
    attenuates a coordinate, never flips it. Its limits: :math:`f = 1/2` wherever either loss
    carries no signal (an estimate of 0, or an infinite standard error); as both standard
    errors go to 0, :math:`f` tends to the AND mask of the estimates (1 where they agree in
    sign, 0 where they disagree); as either grows, :math:`f \\to 1/2`. Thresholding it gives
    the PROB mask (:math:`f \\ge p`). :math:`f = 0` only where both estimates are exact
    (``se = 0``) and of opposite signs.

    ``variant="signed"`` (this project's earlier reading, not the paper's):
    :math:`f = \\varphi_U + \\varphi_C - 1 \\in [-1, 1]`, the posterior mean of
    :math:`(\\mathrm{sgn}\\, g_U + \\mathrm{sgn}\\, g_C)/2`, with
    :math:`u = f \\odot \\lvert a \\rvert`. ``p`` is not used.

    ``variant="soft"`` (this project's reading, not the paper's):
    :math:`w = \\mathrm{clip}((P - p)/(1 - p), 0, 1)`, a soft PROB mask with
    :math:`u = w \\odot a`; :math:`w > 0` exactly where :math:`P > p`.

    References:
        Dine, Furon, Faure (2025), Props. 6-7; the authors' code, ``unlearn/NGradFocus.py``
        in ``owl1996/UnlearningFocusVector`` (``vmask`` multiplies the aggregate); the first
        author's blog, post 2026-08-03-two-dimensional-adam (the gate
        :math:`f = \\tfrac12(1 + \\psi_1 \\psi_2)`).

    Args:
        g_u: estimate of the unlearning gradient: a tensor, or a list or dict of tensors.
        g_c: estimate of the constraint gradient, same structure and shapes.
        se_u: standard error of ``g_u``, same structure and shapes, >= 0.
        se_c: standard error of ``g_c``, same structure and shapes, >= 0.
        variant: ``"probability"``, ``"signed"`` or ``"soft"``.
        p: the soft variant's threshold, in the open interval (0, 1).

    Returns:
        The factor (:math:`f \\in [0, 1]`, :math:`f \\in [-1, 1]` or :math:`w \\in [0, 1]`),
        same structure and shapes as ``g_u``.

    Raises:
        ValueError: an unknown variant, ``p`` outside (0, 1), mismatched structures or shapes,
            NaN or inf, or a negative standard error.
        TypeError: a leaf that is not a floating-point tensor.
    """
    _check_choice("focus variant", variant, FOCUS_VARIANTS)
    _check_probability("focus", "p", p)
    trees = {"g_u": g_u, "g_c": g_c, "se_u": se_u, "se_c": se_c}
    check_trees("focus", trees, nonnegative={"se_u": _SE, "se_c": _SE})
    factor = FOCUS_VARIANTS[variant].factor

    def leaf_factor(gu: Tensor, gc: Tensor, su: Tensor, sc: Tensor) -> Tensor:
        return factor(_centred_phi(gu, su), _centred_phi(gc, sc), p)

    return tree_map(leaf_factor, g_u, g_c, se_u, se_c)


def certified_mask(
    g_u: Tree,
    g_c: Tree,
    *,
    alpha: float = 1.0,
    beta: float = 1.0,
    agg: str = "lin",
    weight: Optional[Tree] = None,
) -> Tree:
    """Cuts the most conflicting coordinates until a step descends both batch losses (OPT).

    With :math:`w` the per-coordinate ``weight`` (1 when not given; the focus vector for the
    ``focus_opt`` add-on) and :math:`d = w \\odot \\mathrm{Agg}(\\hat g_U, \\hat g_C)`, the
    mask :math:`m` is built per tensor: its coordinates are sorted by
    :math:`w_i \\hat g_{U,i} \\hat g_{C,i}`, most negative first (a stable sort), and the
    shortest prefix is removed after which the kept direction :math:`u = m \\odot d`
    satisfies, on that tensor,
    :math:`\\langle u, \\hat g_U \\rangle \\ge 0` and :math:`\\langle u, \\hat g_C \\rangle \\ge 0`:
    a small step :math:`\\theta - \\eta u` lowers neither batch loss to first order (so it
    holds for all tensors together too). The search is a sort and two cumulative sums per tensor
    (in float64), with no loop over coordinates.

    When the direction is already a descent direction for both, nothing is cut. A cut-off
    always exists: removing every coordinate leaves :math:`u = 0`, which satisfies both
    inequalities with equality, so a tensor whose two gradients conflict too broadly gets a
    zero direction for that step (the authors' code, when no prefix passes its test, also
    zeroes the whole tensor). The mask is minimal in its order (keeping the last coordinate
    removed breaks the inequalities), not the fewest removals over all subsets.

    Relation to the authors' code (``unlearn/NGPlus_OPT.py`` and ``unlearn/NGradFocusOPT.py``
    in ``owl1996/UnlearningFocusVector``): for linG with :math:`\\alpha, \\beta > 0` and no
    weight, their test
    :math:`\\min(\\tfrac{\\alpha}{\\beta} \\sum \\hat g_U^2, \\tfrac{\\beta}{\\alpha} \\sum
    \\hat g_C^2) + \\sum \\hat g_U \\hat g_C \\ge 0` over the kept coordinates is exactly the
    pair of inequalities above (divide :math:`\\langle u, \\hat g_U \\rangle` by :math:`\\beta`
    and :math:`\\langle u, \\hat g_C \\rangle` by :math:`\\alpha`), and the order is the same,
    so the masks agree. With a focus weight their code applies that test to the focused
    gradients :math:`f \\odot \\hat g` (every sum weighted by :math:`f^2`, sorted by
    :math:`f^2 \\hat g_U \\hat g_C`), which certifies descent for :math:`f \\odot \\hat g`
    rather than for the batch losses; this function follows the first author's blog (post
    2026-08-04-certifying-two-task-steps: :math:`V(f) \\le 0` with sums weighted by
    :math:`f`), which certifies the batch losses themselves. Unlike the blog's greedy, the
    order is the code's (the cross term only) and the threshold is 0. The weighted form also
    covers MinG and weights of 0.

    References:
        Dine, Furon, Faure (2025), Def. 1; the authors' code and blog, as above.

    Args:
        g_u: estimate of the unlearning gradient: a tensor, or a list or dict of tensors.
        g_c: estimate of the constraint gradient, same structure and shapes.
        alpha: weight of ``g_u`` in the aggregate, >= 0.
        beta: weight of ``g_c`` in the aggregate, >= 0.
        agg: the aggregator, ``"lin"`` or ``"min"``.
        weight: per-coordinate weights >= 0 (e.g. from :func:`focus`), same structure; None
            for 1 everywhere.

    Returns:
        A bool mask, True where a coordinate is kept, same structure and shapes as ``g_u``.

    Raises:
        ValueError: a negative weight or ``alpha``/``beta``, an unknown aggregator, mismatched
            structures or shapes, NaN or inf.
        TypeError: a leaf that is not a floating-point tensor.
    """
    _check_weight("certified_mask", "alpha", alpha)
    _check_weight("certified_mask", "beta", beta)
    _check_choice("aggregator", agg, AGGREGATORS)
    trees = {"g_u": g_u, "g_c": g_c}
    if weight is not None:
        trees["weight"] = weight
    check_trees("certified_mask", trees,
                nonnegative={"weight": "a per-coordinate weight such as the focus vector"})
    aggregate = _AGGREGATE[agg]

    def leaf_mask(gu: Tensor, gc: Tensor, w: Optional[Tensor]) -> Tensor:
        a = aggregate(gu, gc, alpha, beta)
        return _certify(a if w is None else w * a, gu, gc, w)

    nothing = tree_map(lambda _: None, g_u)
    return tree_map(leaf_mask, g_u, g_c, nothing if weight is None else weight)


def saliency_mask(grads: Tree, fraction: float = 0.5, *, per_tensor: bool = False) -> Tree:
    """Keeps the largest ``fraction`` of the gradient's magnitudes (SalUn's mask).

    ``per_tensor=False`` (SalUn's static mask): all tensors are ranked together by
    :math:`\\lvert g \\rvert`; exactly ``round(fraction * numel)`` coordinates are kept
    (Python's ``round``), ties broken by position: earlier tensors first, then row-major
    order. The ranking is done on the first tensor's device; each mask is returned on its own
    tensor's device. SalUn's public ``Classification/generate_mask.py`` (OPTML-Group/
    Unlearn-Saliency, since Dec. 2023) negates the magnitudes before sorting and so also keeps
    the *largest* fraction, but ``int(fraction * numel)`` of them, with ties in
    ``torch.argsort``'s order: at most one coordinate, and the order among equal magnitudes,
    differ.

    ``per_tensor=True`` (the authors' per-step SalUn baseline): within each tensor,
    ``|g| >= torch.quantile(|g|, 1 - fraction, interpolation="midpoint")``, as the authors'
    ``unlearn/SalUn.py`` does with ``quantile = 1 - fraction``. Every coordinate tied at the
    threshold is kept, so more than the fraction may be kept; where more than ``1 - fraction``
    of a tensor's gradient is exactly 0 (dead units), the threshold is 0 and the whole tensor
    is kept. The quantile's rank :math:`q (n - 1)` is computed in float64 and snapped to an
    integer within a few units of rounding (so ``fraction = 0.7`` ranks as ``q = 0.3``);
    ``torch.quantile`` computes it in the tensor's dtype, which can move the threshold by one
    order statistic where that rank falls within float32 rounding of an integer.

    References:
        Fan et al., SalUn (ICLR 2024); the authors' code, ``unlearn/SalUn.py`` in
        ``owl1996/UnlearningFocusVector``.

    Args:
        grads: the saliency gradient, e.g. the gradient of the forget loss (:math:`-` CE) at
            the original model, or on the current forget batch: a tensor, or a list or dict of
            tensors.
        fraction: the share of coordinates kept, in (0, 1].
        per_tensor: threshold each tensor at its own quantile instead of ranking all together.

    Returns:
        A bool mask, same structure and shapes as ``grads``.

    Raises:
        ValueError: ``fraction`` outside (0, 1], or NaN or inf in ``grads``.
        TypeError: a leaf that is not a floating-point tensor, or a non-bool ``per_tensor``.
    """
    ok = isinstance(fraction, numbers.Real) and not isinstance(fraction, bool)
    if not ok or not 0.0 < fraction <= 1.0:
        raise ValueError(
            "The 'fraction' parameter of saliency_mask must be a float in the interval (0, 1]. "
            f"Got {fraction!r} instead."
        )
    _check_bool("saliency_mask", "per_tensor", per_tensor)
    check_trees("saliency_mask", {"grads": grads})
    if per_tensor:
        return tree_map(functools.partial(_top_fraction_per_tensor, fraction=float(fraction)),
                        grads)
    return _top_fraction_global(grads, fraction)


# ---------------------------------------------------------------------------------------------
# Algorithm 1: the update direction, an add-on looked up by name.
# ---------------------------------------------------------------------------------------------


#: Aggregator name to function, ``"lin"`` (:func:`lin_g`) and ``"min"`` (:func:`min_g`).
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
    #: The saliency mask, or None when not given.
    saliency: Optional[Tensor]


def _masked(a: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
    return torch.where(keep, a, 0.0), keep  # no ~keep buffer


def _addon_none(x: AddonInputs, p: float, focus_variant: str) -> tuple[Tensor, Tensor]:
    del p, focus_variant
    return x.a, torch.ones_like(x.a, dtype=torch.bool)


def _addon_saliency(x: AddonInputs, p: float, focus_variant: str) -> tuple[Tensor, Tensor]:
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


def _addon_opt(x: AddonInputs, p: float, focus_variant: str) -> tuple[Tensor, Tensor]:
    del p, focus_variant
    return _masked(x.a, _certify(x.a, x.g_u, x.g_c, None))


def _addon_focus_opt(x: AddonInputs, p: float, focus_variant: str) -> tuple[Tensor, Tensor]:
    del p, focus_variant  # always the authors' focus vector, f = P
    f = _probability(_centred_phi(x.g_u, x.se_u), _centred_phi(x.g_c, x.se_c))
    u = f * x.a
    return _masked(u, _certify(u, x.g_u, x.g_c, f) & (f > 0))


#: What each optional input of an add-on is, for the messages that ask for it.
_INPUTS = {
    "se_u": "the standard error of g_u, e.g. from grad_stats or ema_scale",
    "se_c": "the standard error of g_c, e.g. from grad_stats or ema_scale",
    "saliency": "a bool mask, e.g. from saliency_mask",
}
_SALIENCY_SOURCES = (None, "theta0", "step")


@dataclass(frozen=True)
class Addon:
    """One add-on of Algorithm 1, as a record that the masks, the loop and the CLI all read.

    Attributes:
        name: the add-on's name, its key in :data:`ADDONS`.
        rule: the per-tensor rule ``(AddonInputs, p, focus_variant) -> (direction, keep)``.
        needs_both: whether the rule compares the two gradients, so that both are computed at
            every step even where the method weighs one of them 0.
        needs_se: whether it needs the standard errors ``se_u`` and ``se_c`` (a noise model).
        requires: the optional inputs of :func:`feasible_update` it cannot run without.
        uses: the configuration fields it reads beyond the common ones (a configuration hash
            ignores them for other add-ons).
        description: one line for tables and the command line, saying whose rule it is.
        saliency: where its saliency mask comes from: ``"theta0"`` (computed once at the
            original model, global over all parameters), ``"step"`` (recomputed at every step
            from the gradient of :math:`-` CE on the current forget batch, per tensor), or None.
    """

    name: str
    rule: Callable[[AddonInputs, float, str], tuple[Tensor, Tensor]]
    needs_both: bool
    needs_se: bool
    requires: tuple[str, ...]
    uses: tuple[str, ...]
    description: str
    saliency: Optional[str] = None

    def __post_init__(self) -> None:
        unknown = set(self.requires) - set(_INPUTS)
        if unknown:
            raise ValueError(f"Add-on {self.name!r} requires unknown inputs {sorted(unknown)}; "
                             f"expected some of {list(_INPUTS)}.")
        if self.needs_se != ({"se_u", "se_c"} <= set(self.requires)):
            raise ValueError(f"Add-on {self.name!r}: needs_se must say whether it requires "
                             "'se_u' and 'se_c'.")
        if self.saliency not in _SALIENCY_SOURCES:
            raise ValueError(f"Add-on {self.name!r}: saliency must be one of "
                             f"{_SALIENCY_SOURCES}. Got {self.saliency!r} instead.")
        if (self.saliency is not None) != ("saliency" in self.requires):
            raise ValueError(f"Add-on {self.name!r}: saliency must name its source exactly "
                             "when it requires 'saliency'.")


def _addons(*records: Addon) -> dict[str, Addon]:
    return {record.name: record for record in records}


#: The add-ons by name; iterating yields the names, in the order tables and the CLI list them.
ADDONS: dict[str, Addon] = _addons(
    Addon("none", _addon_none, needs_both=False, needs_se=False, requires=(), uses=(),
          description="the base method's aggregate, unmasked"),
    Addon("salun", _addon_saliency, needs_both=False, needs_se=False, requires=("saliency",),
          uses=("saliency_fraction",), saliency="theta0",
          description="SalUn's static mask: the global top fraction of |grad(-CE)| on D_f "
                      "at theta0"),
    Addon("salun_step", _addon_saliency, needs_both=False, needs_se=False,
          requires=("saliency",), uses=("saliency_fraction",), saliency="step",
          description="the authors' SalUn baseline: per tensor, the top fraction of "
                      "|grad(-CE)| on the current forget batch, recomputed every step"),
    Addon("and", _addon_and, needs_both=True, needs_se=False, requires=(), uses=(),
          description="AND mask: keep the coordinates where both gradients agree in sign"),
    Addon("prob", _addon_prob, needs_both=True, needs_se=True, requires=("se_u", "se_c"),
          uses=("p", "noise", "k"),
          description="PROB mask: keep the coordinates whose agreement probability is >= p"),
    Addon("focus", _addon_focus, needs_both=True, needs_se=True, requires=("se_u", "se_c"),
          uses=("focus_variant", "p", "noise", "k"),
          description="focus vector: weigh each coordinate by its agreement probability "
                      "(the authors'; other variants by name)"),
    Addon("opt", _addon_opt, needs_both=True, needs_se=False, requires=(), uses=(),
          description="certified: per tensor, cut the most conflicting coordinates until the "
                      "step descends both batch losses (the authors' OPT)"),
    Addon("focus_opt", _addon_focus_opt, needs_both=True, needs_se=True,
          requires=("se_u", "se_c"), uses=("noise", "k"),
          description="the focus direction f * a, then certified as opt (the authors' "
                      "FocusOPT, certifying the batch losses as the blog does)"),
)


class Update(NamedTuple):
    """The result of :func:`feasible_update`: the direction and the coordinates it may move."""

    #: The update direction ``u``, structured like ``g_u``; descend: ``theta - lr * u``.
    direction: Tree
    #: Bool, structured like ``g_u``: the coordinates the step may move. A mask applies to the
    #: parameter change actually made, so an optimiser that freezes masked coordinates leaves
    #: the others unchanged (no momentum or weight-decay leak).
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
    _check_bool(caller, "renorm", renorm)
    record = ADDONS[addon]
    optional = {"se_u": se_u, "se_c": se_c, "saliency": saliency}
    for name in record.requires:
        if optional[name] is None:
            what = _INPUTS[name]
            if record.saliency == "step":
                what = ("a bool mask recomputed at every step, e.g. saliency_mask(gradient of "
                        "-CE on the forget batch, fraction, per_tensor=True)")
            raise ValueError(
                f"The '{name}' parameter of {caller} is required for add-on '{addon}' "
                f"({what}). Got None instead."
            )
    given = {name: tree for name, tree in optional.items() if tree is not None}
    check_trees(
        caller,
        {"g_u": g_u, "g_c": g_c, **given},
        nonnegative={"se_u": _SE, "se_c": _SE},
        masks=("saliency",),
    )

    return compute_update(g_u, g_c, se_u, se_c, addon=addon, agg=agg, alpha=alpha, beta=beta,
                          p=p, saliency=saliency, focus_variant=focus_variant, renorm=renorm)


def compute_update(
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
    """:func:`feasible_update` without its validation, for a loop that built its own inputs.

    The engine's inner step calls this once per step on gradients it computed itself, after
    validating its configuration once; it skips the checks of structure, shapes, finiteness and
    names that cost a pass over every parameter. Call :func:`feasible_update` otherwise.
    """
    record = ADDONS[addon]
    aggregate = functools.partial(_AGGREGATE[agg], alpha=alpha, beta=beta)
    rule = record.rule
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


def aggregate_unchecked(g_u: Tree, g_c: Tree, agg: str, alpha: float, beta: float) -> Tree:
    """The aggregate of :func:`lin_g` or :func:`min_g` without validation (see
    :func:`compute_update`)."""
    return tree_map(functools.partial(_AGGREGATE[agg], alpha=alpha, beta=beta), g_u, g_c)


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
    focus_variant: str = DEFAULT_FOCUS_VARIANT,
    renorm: bool = False,
) -> Update:
    """The update direction of Algorithm 1 and the coordinates it may move.

    With :math:`a = \\mathrm{Agg}(\\hat g_U, \\hat g_C)` (``agg``: ``"lin"`` or ``"min"``),
    the direction is, by ``addon`` (see :data:`ADDONS`):

    - ``"none"``: ``a``; ``keep`` all True.
    - ``"salun"`` and ``"salun_step"``: ``saliency * a``; ``keep`` the mask. The two differ in
      the mask they are given: SalUn's static global mask at the original model, or the
      authors' per-tensor mask of the current forget batch (:func:`saliency_mask`).
    - ``"and"``: ``and_mask * a``; ``"prob"``: ``prob_mask * a``; ``keep`` the mask.
    - ``"focus"``: ``f * a`` with the authors' :math:`f = P` (``focus_variant="probability"``),
      or a named variant of :func:`focus` (``"signed"``: ``f * abs(a)``; ``"soft"``:
      ``w * a``); ``keep`` where the factor is non-zero (for :math:`f = P`, everywhere but
      exact estimates of opposite signs).
    - ``"opt"``: ``m * a`` with ``m`` = :func:`certified_mask` (no weight); ``keep`` = ``m``.
    - ``"focus_opt"``: ``m * f * a`` with :math:`f = P` (whatever ``focus_variant``) and ``m``
      = :func:`certified_mask` with ``weight=f``; ``keep`` = ``m`` where :math:`f > 0`.

    ``renorm=True`` rescales the direction to the global L2 norm of the unmasked ``a`` (a zero
    direction stays zero). Inputs are never modified; every output is on its input's device.

    References:
        Dine, Furon, Faure (2025), Algorithm 1 and Figs. 1-5; the authors' code for the
        add-ons (``unlearn/NGradMask.py``, ``NGradFocus.py``, ``NGPlus_OPT.py``,
        ``NGradFocusOPT.py``, ``SalUn.py`` in ``owl1996/UnlearningFocusVector``). ``renorm``
        is this project's option, not the paper's.

    Args:
        g_u: estimate of the unlearning gradient: a tensor, or a list or dict of tensors.
        g_c: estimate of the constraint gradient, same structure and shapes.
        se_u: standard error of ``g_u`` (same structure, >= 0); required for the add-ons that
            need a noise model (``"prob"``, ``"focus"``, ``"focus_opt"``), validated whenever
            given.
        se_c: standard error of ``g_c``, likewise.
        addon: a key of :data:`ADDONS`.
        agg: ``"lin"`` (:func:`lin_g`) or ``"min"`` (:func:`min_g`).
        alpha: weight of ``g_u``, >= 0.
        beta: weight of ``g_c``, >= 0.
        p: the PROB threshold (and the soft focus threshold), in (0, 1).
        saliency: the saliency mask (nonzero means kept, e.g. from :func:`saliency_mask`),
            same structure; required for ``"salun"`` and ``"salun_step"``.
        focus_variant: a key of :data:`FOCUS_VARIANTS`, read by ``"focus"``.
        renorm: rescale the direction to the norm of the unmasked aggregate.

    Returns:
        ``Update(direction, keep)``, each structured like ``g_u``.

    Raises:
        ValueError: an unknown name, ``p`` outside (0, 1), a negative weight, a missing input
            the add-on requires (named in the message), mismatched structures or shapes, NaN
            or inf, or a negative standard error.
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
    focus_variant: str = DEFAULT_FOCUS_VARIANT,
    renorm: bool = False,
) -> Tree:
    """The update direction ``u`` of Algorithm 1: ``feasible_update(...).direction``.

    The one call a training loop needs: step ``theta - lr * u``. To freeze the masked
    coordinates under momentum or weight decay, use :func:`feasible_update`'s ``keep``.

    References:
        Dine, Furon, Faure (2025), Algorithm 1; see :func:`feasible_update`.

    Args:
        g_u: estimate of the unlearning gradient: a tensor, or a list or dict of tensors.
        g_c: estimate of the constraint gradient, same structure and shapes.
        se_u: standard error of ``g_u``; required for ``"prob"``, ``"focus"``, ``"focus_opt"``.
        se_c: standard error of ``g_c``; likewise.
        addon: a key of :data:`ADDONS`.
        agg: ``"lin"`` or ``"min"``.
        alpha: weight of ``g_u``, >= 0.
        beta: weight of ``g_c``, >= 0.
        p: the PROB threshold, in (0, 1).
        saliency: the saliency mask, required for ``"salun"`` and ``"salun_step"``.
        focus_variant: a key of :data:`FOCUS_VARIANTS`.
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
