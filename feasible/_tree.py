"""Tiny tree helpers: one tensor, or a list, tuple or dict of tensors (one per parameter)."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence, Union

import torch
from torch import Tensor

#: A gradient-like value: one tensor, or a flat list, tuple or dict of tensors.
Tree = Union[Tensor, Sequence[Tensor], Mapping[str, Tensor]]


def _kind(tree: Any) -> str:
    """Names the container kind of ``tree`` for messages ('tensor', 'list', 'tuple', 'dict')."""
    if isinstance(tree, Tensor):
        return "tensor"
    if isinstance(tree, Mapping):
        return "dict"
    if isinstance(tree, tuple):
        return "tuple"
    if isinstance(tree, list):
        return "list"
    return type(tree).__name__


def _describe(tree: Any) -> str:
    """A short description of a tree's structure for error messages."""
    kind = _kind(tree)
    if kind == "dict":
        return f"a dict with keys {list(tree)}"
    if kind in ("list", "tuple"):
        return f"a {kind} of length {len(tree)}"
    if kind == "tensor":
        return "a tensor"
    return f"a {kind}"


def labelled_leaves(tree: Tree, name: str) -> list[tuple[str, Any]]:
    """Lists ``(label, leaf)`` pairs, labels such as ``g_u['fc.weight']`` or ``g_u[2]``.

    Args:
        tree: a tensor, or a list, tuple or dict of tensors.
        name: the argument's name, used as the label's stem.

    Returns:
        The leaves in a fixed order (list order, or the dict's insertion order).
    """
    kind = _kind(tree)
    if kind == "dict":
        return [(f"{name}[{key!r}]", leaf) for key, leaf in tree.items()]
    if kind in ("list", "tuple"):
        return [(f"{name}[{i}]", leaf) for i, leaf in enumerate(tree)]
    return [(name, tree)]


def leaves(tree: Tree) -> list[Any]:
    """The leaves of ``tree`` in the order :func:`tree_map` uses."""
    return [leaf for _, leaf in labelled_leaves(tree, "")]


def check_tensors(caller: str, name: str, tree: Any, *, floating: bool = True) -> None:
    """Checks that ``tree`` is a tensor or a flat list, tuple or dict of tensors.

    Args:
        caller: the public function's name, for the message.
        name: the argument's name, for the message.
        tree: the value to check.
        floating: also require a floating-point dtype.

    Raises:
        TypeError: a leaf is not a ``torch.Tensor`` (or not floating when ``floating``).
    """
    if not isinstance(tree, (Tensor, Mapping, list, tuple)):
        raise TypeError(
            f"The '{name}' argument of {caller} must be a torch.Tensor or a list or dict of "
            f"tensors. Got {type(tree).__name__} instead."
        )
    for label, leaf in labelled_leaves(tree, name):
        if not isinstance(leaf, Tensor):
            raise TypeError(
                f"The '{name}' argument of {caller} must hold torch.Tensor leaves; "
                f"{label} is a {type(leaf).__name__}."
            )
        if floating and not leaf.is_floating_point():
            raise TypeError(
                f"The '{name}' argument of {caller} must hold floating-point tensors; "
                f"{label} has dtype {leaf.dtype}."
            )


def check_same_structure(caller: str, trees: Mapping[str, Tree]) -> None:
    """Checks that every tree has the structure and leaf shapes of the first one.

    Args:
        caller: the public function's name, for the message.
        trees: argument name to tree, in the order the caller lists its arguments.

    Raises:
        ValueError: the container kinds, dict keys, lengths or leaf shapes differ.
    """
    items = list(trees.items())
    ref_name, ref = items[0]
    for name, tree in items[1:]:
        same = _kind(tree) == _kind(ref)
        if same and _kind(ref) == "dict":
            same = set(tree) == set(ref)
        elif same and _kind(ref) in ("list", "tuple"):
            same = len(tree) == len(ref)
        if not same:
            raise ValueError(
                f"The '{ref_name}' and '{name}' arguments of {caller} must have the same "
                f"structure. Got {_describe(ref)} and {_describe(tree)} instead."
            )
        ref_leaves = labelled_leaves(ref, ref_name)
        other = labelled_leaves(tree, name)
        if _kind(ref) == "dict":
            other = [(f"{name}[{key!r}]", tree[key]) for key in ref]
        for (ref_label, a), (label, b) in zip(ref_leaves, other):
            if a.shape != b.shape:
                raise ValueError(
                    f"The '{ref_name}' and '{name}' arguments of {caller} must have the same "
                    f"shapes. Got {ref_label} with shape {tuple(a.shape)} and {label} with "
                    f"shape {tuple(b.shape)} instead."
                )


def tree_map(fn: Callable[..., Any], tree: Tree, *rest: Tree) -> Any:
    """Applies ``fn`` leaf by leaf and rebuilds the structure of ``tree``.

    The trees in ``rest`` must share the structure of ``tree`` (dicts are matched by key).

    Args:
        fn: a function of one leaf from each tree.
        tree: the tree whose structure the result takes.
        *rest: further trees of the same structure.

    Returns:
        A tensor, list, tuple or dict (same keys, same order) of ``fn``'s results.
    """
    kind = _kind(tree)
    if kind == "dict":
        return {key: fn(leaf, *(other[key] for other in rest)) for key, leaf in tree.items()}
    if kind in ("list", "tuple"):
        out = [fn(*leaves_i) for leaves_i in zip(tree, *rest)]
        return tuple(out) if kind == "tuple" else out
    return fn(tree, *rest)


def tree_map_pair(fn: Callable[..., tuple[Any, Any]], tree: Tree, *rest: Tree) -> tuple[Any, Any]:
    """Like :func:`tree_map` for an ``fn`` that returns a pair; returns a pair of trees.

    Args:
        fn: a function of one leaf from each tree, returning two values.
        tree: the tree whose structure both results take.
        *rest: further trees of the same structure.

    Returns:
        Two trees shaped like ``tree``: the first and the second values of ``fn``.
    """
    kind = _kind(tree)
    if kind == "dict":
        pairs = {key: fn(leaf, *(other[key] for other in rest)) for key, leaf in tree.items()}
        return ({k: v[0] for k, v in pairs.items()}, {k: v[1] for k, v in pairs.items()})
    if kind in ("list", "tuple"):
        pairs = [fn(*leaves_i) for leaves_i in zip(tree, *rest)]
        firsts, seconds = [v[0] for v in pairs], [v[1] for v in pairs]
        if kind == "tuple":
            return tuple(firsts), tuple(seconds)
        return firsts, seconds
    return fn(tree, *rest)


def all_true(flags: Sequence[Tensor]) -> bool:
    """Reduces 0-dim bool tensors to one Python bool with a single host synchronisation."""
    if not flags:
        return True
    device = flags[0].device
    return bool(torch.stack([flag.to(device) for flag in flags]).all())


def check_trees(
    caller: str,
    trees: Mapping[str, Tree],
    *,
    nonnegative: Mapping[str, str] | None = None,
    masks: Sequence[str] = (),
) -> None:
    """Checks types, structures, shapes, finiteness and, where asked, signs of several trees.

    All the value checks are reduced on the device and read back with one synchronisation;
    only when one fails are the leaves inspected again to name the culprit.

    Args:
        caller: the public function's name, for messages.
        trees: argument name to tree; the first one sets the structure.
        nonnegative: argument name to what it is (e.g. ``"a standard error"``), for the
            arguments that must also be >= 0.
        masks: names of the arguments that may have any dtype (e.g. bool masks); their values
            are not checked.

    Raises:
        TypeError: a leaf is not a tensor, or a non-mask leaf is not floating point.
        ValueError: structures or shapes differ, a value is NaN or inf, or a value that must be
            >= 0 is negative.
    """
    nonnegative = dict(nonnegative or {})
    for name, tree in trees.items():
        check_tensors(caller, name, tree, floating=name not in masks)
    check_same_structure(caller, trees)
    flags = []
    for name, tree in trees.items():
        if name in masks:
            continue
        for leaf in leaves(tree):
            flag = torch.isfinite(leaf).all()
            if name in nonnegative:
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
            if name in nonnegative and bool((leaf < 0).any()):
                raise ValueError(
                    f"The '{name}' argument of {caller} must be >= 0 ({nonnegative[name]}). "
                    f"Got {leaf.min().item():.4g} in {label} instead."
                )
