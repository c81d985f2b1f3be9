"""Helpers for the book's pages on Props. 4-7: posterior Monte Carlo, a recorded unlearning epoch, calibration."""
from __future__ import annotations

import copy
from typing import Callable, NamedTuple

import torch
from torch import Tensor, nn

from feasible import masks, noise
from feasible.demo import Batch, ce, flatten, neg_ce, sample_batch

LossFn = Callable[[Tensor, Tensor], Tensor]


class MonteCarlo(NamedTuple):
    """A Monte Carlo estimate and its standard error (same shape)."""

    estimate: Tensor
    stderr: Tensor


class EpochRecord(NamedTuple):
    """The agreement probabilities recorded at every step of one unlearning epoch.

    ``prob`` and ``active`` have shape ``(steps, d)``: one flat row per step, ``d`` the number
    of parameters. ``active`` marks the coordinates where at least one of the two batch
    gradients is non-zero (THEORY.md §4, ties). ``loss_u`` and ``loss_c`` are the batch losses
    before each step.
    """

    prob: Tensor
    active: Tensor
    loss_u: list[float]
    loss_c: list[float]


class Calibration(NamedTuple):
    """A reliability table of ``phi`` against the sign of the full-data gradient, one row per bin.

    ``phi_mean`` is the mean of ``phi`` in each bin, ``positive_share`` the share of those
    coordinates whose full-data gradient is positive, ``count`` their number (empty bins hold
    NaN), and ``error`` the count-weighted mean of ``|positive_share - phi_mean|``.
    """

    phi_mean: Tensor
    positive_share: Tensor
    count: Tensor
    error: float


def _check_positive_int(name: str, func: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"The '{name}' parameter of {func} must be an int >= 1. Got {value!r} instead."
        )


def _posterior_chunks(
    g: Tensor, se: Tensor, n_draws: int, generator: torch.Generator, chunk: int
):
    """Yield draws of the true gradient from ``N(g, diag se^2)`` in chunks of rows."""
    done = 0
    while done < n_draws:
        rows = min(chunk, n_draws - done)
        standard = torch.randn((rows, *g.shape), generator=generator, dtype=g.dtype)
        yield g + se * standard
        done += rows


def agreement_monte_carlo(
    g_u: Tensor,
    g_c: Tensor,
    se_u: Tensor,
    se_c: Tensor,
    *,
    n_draws: int,
    generator: torch.Generator,
    chunk: int = 512,
) -> MonteCarlo:
    """Estimate ``P[g_U,i g_C,i > 0 | ghat]`` per coordinate by sampling the posterior.

    The true gradients are drawn independently from the flat-prior posteriors
    ``g_U ~ N(ghat_U, diag se_U^2)`` and ``g_C ~ N(ghat_C, diag se_C^2)``, the noise model of
    THEORY.md §4; the estimate is the share of draws where the two signs agree. It is the
    quantity that :func:`feasible.masks.agreement_probability` gives in closed form (Prop. 4).

    References:
        Dine, Furon and Faure (2025), Prop. 4; THEORY.md §4 (noise model: *reading*).

    Args:
        g_u: batch estimate of the unlearning gradient, any shape (CPU tensor).
        g_c: batch estimate of the constraint gradient, same shape.
        se_u: standard errors of ``g_u``, same shape, must be >= 0.
        se_c: standard errors of ``g_c``, same shape, must be >= 0.
        n_draws: number of posterior draws, must be >= 2.
        generator: the random generator (seeded by the caller).
        chunk: draws held in memory at once, must be >= 1.

    Returns:
        The per-coordinate share of agreeing draws and its binomial standard error
        ``sqrt(P(1 - P) / n_draws)``, both of the shape of ``g_u``.

    Raises:
        ValueError: if ``n_draws < 2``, ``chunk < 1``, a standard error is negative or the
            shapes differ.
    """
    _validate_pair(g_u, g_c, se_u, se_c, "agreement_monte_carlo")
    if isinstance(n_draws, bool) or not isinstance(n_draws, int) or n_draws < 2:
        raise ValueError(
            f"The 'n_draws' parameter of agreement_monte_carlo must be an int >= 2. Got {n_draws!r} instead."
        )
    _check_positive_int("chunk", "agreement_monte_carlo", chunk)
    agree = torch.zeros_like(g_u)
    draws_u = _posterior_chunks(g_u, se_u, n_draws, generator, chunk)
    draws_c = _posterior_chunks(g_c, se_c, n_draws, generator, chunk)
    for du, dc in zip(draws_u, draws_c):
        agree += (du * dc > 0).to(g_u.dtype).sum(0)
    share = agree / n_draws
    return MonteCarlo(share, (share * (1 - share) / n_draws).sqrt())


def alignment_monte_carlo(
    u: Tensor,
    g_u: Tensor,
    g_c: Tensor,
    se_u: Tensor,
    se_c: Tensor,
    *,
    n_draws: int,
    generator: torch.Generator,
    chunk: int = 256,
) -> MonteCarlo:
    """Estimate ``E[sum_i u_i (sgn g_U,i + sgn g_C,i) / 2 | ghat]`` by sampling the posterior.

    For any update ``u`` it equals ``sum_i u_i s_i`` with ``s = phi_U + phi_C - 1``, the
    ``"signed"`` focus variant (this project's reading of Prop. 6, not the authors' focus
    vector); for ``u = s * |a|`` it equals ``sum_i |a_i| s_i^2``.

    References:
        Dine, Furon and Faure (2025), Prop. 6 (this project's signed reading).

    Args:
        u: an update direction, any shape (CPU tensor).
        g_u: batch estimate of the unlearning gradient, same shape.
        g_c: batch estimate of the constraint gradient, same shape.
        se_u: standard errors of ``g_u``, same shape, must be >= 0.
        se_c: standard errors of ``g_c``, same shape, must be >= 0.
        n_draws: number of posterior draws, must be >= 2.
        generator: the random generator (seeded by the caller).
        chunk: draws held in memory at once, must be >= 1.

    Returns:
        The sample mean over draws (a 0-d tensor) and its standard error.

    Raises:
        ValueError: if ``n_draws < 2``, ``chunk < 1``, a standard error is negative or the
            shapes differ.
    """
    _validate_pair(g_u, g_c, se_u, se_c, "alignment_monte_carlo")
    if u.shape != g_u.shape:
        raise ValueError(
            f"The 'u' and 'g_u' tensors of alignment_monte_carlo must have the same shape. "
            f"Got {tuple(u.shape)} and {tuple(g_u.shape)} instead."
        )
    if isinstance(n_draws, bool) or not isinstance(n_draws, int) or n_draws < 2:
        raise ValueError(
            f"The 'n_draws' parameter of alignment_monte_carlo must be an int >= 2. Got {n_draws!r} instead."
        )
    _check_positive_int("chunk", "alignment_monte_carlo", chunk)
    values = []
    draws_u = _posterior_chunks(g_u, se_u, n_draws, generator, chunk)
    draws_c = _posterior_chunks(g_c, se_c, n_draws, generator, chunk)
    for du, dc in zip(draws_u, draws_c):
        common = (du.sign() + dc.sign()) / 2
        values.append((common * u).reshape(len(du), -1).sum(1))
    values = torch.cat(values)
    return MonteCarlo(values.mean(), values.std() / n_draws**0.5)


def _validate_pair(g_u: Tensor, g_c: Tensor, se_u: Tensor, se_c: Tensor, func: str) -> None:
    named = {"g_u": g_u, "g_c": g_c, "se_u": se_u, "se_c": se_c}
    for name, t in named.items():
        if not isinstance(t, Tensor):
            raise TypeError(f"The '{name}' argument of {func} must be a torch.Tensor. Got {type(t).__name__}.")
        if t.shape != g_u.shape:
            raise ValueError(
                f"The 'g_u' and '{name}' tensors of {func} must have the same shape. "
                f"Got {tuple(g_u.shape)} and {tuple(t.shape)} instead."
            )
    for name in ("se_u", "se_c"):
        if (named[name] < 0).any():
            raise ValueError(f"The '{name}' argument of {func} must be >= 0 everywhere. Got a negative value.")


def record_unlearning_epoch(
    model: nn.Module,
    forget: Batch,
    retain: Batch,
    *,
    batch_size: int = 32,
    lr: float = 0.1,
    alpha: float = 0.05,
    beta: float = 0.95,
    method: str = "microbatch",
    k: int = 8,
    seed: int = 0,
    loss_u: LossFn = neg_ce,
    loss_c: LossFn = ce,
) -> EpochRecord:
    """Run one unlearning epoch of linG steps on a copy of ``model`` and record ``P`` at each step.

    Each step draws the next forget batch (one pass over the forget set, in a seeded random
    order, incomplete last batch dropped) and a random retain batch of the same size,
    estimates both gradients and their standard errors with :func:`feasible.noise.grad_stats`,
    records the agreement probability of every parameter (Prop. 4), then takes the plain step
    ``theta <- theta - lr * (alpha * ghat_U + beta * ghat_C)``. The defaults ``alpha = 0.05``,
    ``beta = 0.95`` with ``L_U = -CE`` and ``L_C = CE`` are NGPlus (THEORY.md §1); ``alpha = 1``,
    ``beta = 0`` is gradient ascent. No mask is applied: this records what the base method sees.

    References:
        Dine, Furon and Faure (2025), Fig. 3 and Prop. 4; THEORY.md §1, §4, §9.

    Args:
        model: the trained model; it is copied, never modified.
        forget: the forget set ``(x, y)``.
        retain: the retain set ``(x, y)``.
        batch_size: examples per batch, must be >= ``k`` and <= the forget set's size.
        lr: the learning rate, must be >= 0.
        alpha: weight on ``ghat_U``, must be >= 0.
        beta: weight on ``ghat_C``, must be >= 0.
        method: the noise estimator of ``grad_stats`` ("microbatch" or "per_sample").
        k: micro-batches per batch for ``method="microbatch"``.
        seed: seeds the batch order and the retain batches.
        loss_u: the unlearning loss ``(outputs, targets) -> mean loss``.
        loss_c: the constraint loss.

    Returns:
        An :class:`EpochRecord` with one row per step.

    Raises:
        ValueError: if ``batch_size`` is not in ``[k, len(forget)]`` or ``lr``, ``alpha`` or
            ``beta`` is negative.
    """
    n_forget = len(forget[1])
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not k <= batch_size <= n_forget:
        raise ValueError(
            f"The 'batch_size' parameter of record_unlearning_epoch must be an int in [k={k}, "
            f"{n_forget}] (the forget set's size). Got {batch_size!r} instead."
        )
    for name, value in (("lr", lr), ("alpha", alpha), ("beta", beta)):
        if not value >= 0:
            raise ValueError(
                f"The '{name}' parameter of record_unlearning_epoch must be a float >= 0. Got {value!r} instead."
            )
    net = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(n_forget, generator=gen)
    probs, actives, losses_u, losses_c = [], [], [], []
    for start in range(0, n_forget - batch_size + 1, batch_size):
        idx = order[start:start + batch_size]
        xr, yr = sample_batch(retain, batch_size, gen)
        su = noise.grad_stats(net, loss_u, forget[0][idx], forget[1][idx], method=method, k=k)
        sc = noise.grad_stats(net, loss_c, xr, yr, method=method, k=k)
        prob = masks.agreement_probability(su.mean, sc.mean, su.se, sc.se)
        probs.append(flatten(prob))
        actives.append((flatten(su.mean) != 0) | (flatten(sc.mean) != 0))
        losses_u.append(su.loss)
        losses_c.append(sc.loss)
        step = masks.lin_g(su.mean, sc.mean, alpha, beta)
        with torch.no_grad():
            for name, param in net.named_parameters():
                if name in step:
                    param -= lr * step[name]
    return EpochRecord(torch.stack(probs), torch.stack(actives), losses_u, losses_c)


def calibration(phi: Tensor, g_true: Tensor, *, bins: int = 10) -> Calibration:
    """Bin ``phi`` and measure, per bin, the share of coordinates whose true gradient is positive.

    Under the Gaussian noise model, ``phi = P[g > 0 | ghat]``: among coordinates with
    ``phi`` near ``q`` a share near ``q`` should have a positive full-data gradient
    (THEORY.md §8). Coordinates whose full-data gradient is exactly zero (dead units) have no
    sign to predict and are left out.

    References:
        THEORY.md §8 (calibration check; the noise model is a *reading*).

    Args:
        phi: probabilities in ``[0, 1]``, any shape.
        g_true: the full-data gradient, same shape.
        bins: number of equal-width bins on ``[0, 1]``, must be >= 1.

    Returns:
        A :class:`Calibration` table with ``bins`` rows.

    Raises:
        ValueError: if ``bins < 1``, the shapes differ, or ``phi`` leaves ``[0, 1]``.
    """
    _check_positive_int("bins", "calibration", bins)
    if phi.shape != g_true.shape:
        raise ValueError(
            f"The 'phi' and 'g_true' tensors of calibration must have the same shape. "
            f"Got {tuple(phi.shape)} and {tuple(g_true.shape)} instead."
        )
    if ((phi < 0) | (phi > 1)).any():
        raise ValueError("The 'phi' argument of calibration must lie in [0, 1]. Got a value outside.")
    keep = g_true != 0
    q = phi[keep].double().reshape(-1)
    pos = (g_true[keep] > 0).double().reshape(-1)
    which = (q * bins).long().clamp(max=bins - 1)
    count = torch.bincount(which, minlength=bins).double()
    phi_mean = torch.bincount(which, weights=q, minlength=bins) / count
    share = torch.bincount(which, weights=pos, minlength=bins) / count
    filled = count > 0
    error = ((share - phi_mean).abs()[filled] * count[filled]).sum() / count.sum()
    return Calibration(phi_mean, share, count, float(error))
