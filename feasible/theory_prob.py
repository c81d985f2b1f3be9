"""Helpers for the book's pages on Props. 4-7 and the noise model.

Posterior Monte Carlo, a recorded unlearning epoch, calibration, the batch certificate of the
focus step, the bounds of the authors' running-moment noise scale, and a Monte Carlo of the
focus step's guarantee. Pure functions on tensors, each checked in ``tests/test_theory_prob.py``.
"""
from __future__ import annotations

import copy
import math
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
    gradients is non-zero (a tie has no sign: see the book's page on Prop. 5). ``loss_u`` and
    ``loss_c`` are the batch losses
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
    ``g_U ~ N(ghat_U, diag se_U^2)`` and ``g_C ~ N(ghat_C, diag se_C^2)``, the Gaussian noise
    model of Prop. 4; the estimate is the share of draws where the two signs agree. It is the
    quantity that :func:`feasible.masks.agreement_probability` gives in closed form (Prop. 4).

    References:
        Dine, Furon and Faure (2025), Prop. 4; the formula is the authors' code's
        (``vmask`` in ``unlearn/NGradMask.py`` of ``owl1996/UnlearningFocusVector``).

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
) -> EpochRecord:
    """Run one unlearning epoch of NGPlus on a copy of ``model`` and record ``P`` at each step.

    The epoch is the engine's own loop (:func:`feasible.unlearn.unlearn`) with the authors' form
    of NGPlus (``ngplus_authors``: one pass over the forget set in a seeded random order, a
    retain batch of the same size alongside), plain SGD steps
    ``theta <- theta - lr * (alpha * ghat_U + beta * ghat_C)`` and no add-on. At every step the
    loop's ``on_step`` hook hands over both batch gradients and their standard errors
    (:func:`feasible.noise.grad_stats` with ``method``), and the agreement probability of every
    parameter (Prop. 4) is recorded. The defaults ``alpha = 0.05``, ``beta = 0.95`` are NGPlus as
    the authors weigh it (``(1 - beta) g_U + beta g_C``); ``alpha = 1``, ``beta = 0`` is gradient
    ascent. This records what the base method sees.

    References:
        Dine, Furon and Faure (2025), Fig. 3 and Prop. 4. The plain SGD step and the noise
        estimator are this project's choices for the figure, not the authors' protocol (Adam,
        running-moment noise).

    Args:
        model: the trained model; it is copied, never modified.
        forget: the forget set ``(x, y)``.
        retain: the retain set ``(x, y)``.
        batch_size: examples per batch, must be >= ``k`` and <= the forget set's size.
        lr: the learning rate, must be > 0.
        alpha: weight on ``ghat_U``, must be >= 0.
        beta: weight on ``ghat_C``, must be >= 0.
        method: the noise estimator of ``grad_stats`` ("microbatch" or "per_sample").
        k: micro-batches per batch for ``method="microbatch"``.
        seed: seeds the batch order and the retain batches.

    Returns:
        An :class:`EpochRecord` with one row per step.

    Raises:
        ValueError: if ``batch_size`` is not in ``[k, len(forget)]``, ``lr`` is not positive, or
            ``alpha`` or ``beta`` is negative.
    """
    from feasible.unlearn import UnlearnConfig, unlearn

    n_forget = len(forget[1])
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not k <= batch_size <= n_forget:
        raise ValueError(
            f"The 'batch_size' parameter of record_unlearning_epoch must be an int in [k={k}, "
            f"{n_forget}] (the forget set's size). Got {batch_size!r} instead."
        )
    if not lr > 0:
        raise ValueError(f"The 'lr' parameter of record_unlearning_epoch must be a float > 0. Got {lr!r} instead.")
    for name, value in (("alpha", alpha), ("beta", beta)):
        if not value >= 0:
            raise ValueError(
                f"The '{name}' parameter of record_unlearning_epoch must be a float >= 0. Got {value!r} instead."
            )
    cfg = UnlearnConfig("ngplus_authors", addon="none", alpha=alpha, beta=beta, lr=lr, epochs=1,
                        batch_size=batch_size, noise=method, k=k, seed=seed)
    probs, actives, losses_u, losses_c = [], [], [], []

    def record(step: dict) -> None:
        g_u, g_c = flatten(step["g_u"]), flatten(step["g_c"])
        probs.append(masks.agreement_probability(g_u, g_c, flatten(step["se_u"]), flatten(step["se_c"])))
        actives.append((g_u != 0) | (g_c != 0))
        losses_u.append(step["loss_u"])
        losses_c.append(step["loss_c"])

    net = copy.deepcopy(model)
    num_classes = int(torch.cat([forget[1], retain[1]]).max()) + 1
    unlearn(net, forget, retain, cfg, num_classes=max(num_classes, 2), on_step=record)
    return EpochRecord(torch.stack(probs), torch.stack(actives), losses_u, losses_c)


def calibration(phi: Tensor, g_true: Tensor, *, bins: int = 10) -> Calibration:
    """Bin ``phi`` and measure, per bin, the share of coordinates whose true gradient is positive.

    Under the Gaussian noise model, ``phi = P[g > 0 | ghat]``: among coordinates with
    ``phi`` near ``q`` a share near ``q`` should have a positive full-data gradient
    (a reliability diagram). Coordinates whose full-data gradient is exactly zero (dead units)
    have no sign to predict and are left out.

    References:
        This project's check of the noise model (book pages on Prop. 5 and on the noise
        model); the first author's blog measures the same kind of reliability diagram (post
        2026-08-03-two-dimensional-adam, section "Calibration").

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


# ---------------------------------------------------------------------------------------------
# The focus step: its batch certificate and its guarantee in expectation (Props. 6-7).
# ---------------------------------------------------------------------------------------------


class Certificate(NamedTuple):
    """The batch certificate of a focus step, one value per row (0-d for flat inputs).

    ``s_uu``, ``s_cc``, ``s_uc`` are the focus-weighted second moments
    :math:`\\tilde S_{UU} = \\sum_i f_i \\hat g_{U,i}^2`, :math:`\\tilde S_{CC}`,
    :math:`\\tilde S_{UC} = \\sum_i f_i \\hat g_{U,i} \\hat g_{C,i}`; ``violation`` is
    :math:`V(f) = -\\tilde S_{UC} - \\min(\\tfrac{\\alpha}{\\beta} \\tilde S_{UU},
    \\tfrac{\\beta}{\\alpha} \\tilde S_{CC})`; ``descent_u`` and ``descent_c`` are
    :math:`\\langle u, \\hat g_U \\rangle` and :math:`\\langle u, \\hat g_C \\rangle` for
    :math:`u = f \\odot (\\alpha \\hat g_U + \\beta \\hat g_C)`, summed directly (not from the
    moments), so that the equivalence can be checked rather than assumed.
    """

    violation: Tensor
    s_uu: Tensor
    s_cc: Tensor
    s_uc: Tensor
    descent_u: Tensor
    descent_c: Tensor


def focus_certificate(f: Tensor, g_u: Tensor, g_c: Tensor, *, alpha: float,
                      beta: float) -> Certificate:
    """The first author's batch certificate of the step ``u = f * (alpha g_u + beta g_c)``.

    With :math:`\\theta \\leftarrow \\theta - \\eta u`, the step lowers both batch losses to
    first order iff :math:`\\langle u, \\hat g_U \\rangle = \\alpha \\tilde S_{UU} + \\beta
    \\tilde S_{UC} \\ge 0` and :math:`\\langle u, \\hat g_C \\rangle = \\alpha \\tilde S_{UC} +
    \\beta \\tilde S_{CC} \\ge 0`, that is iff :math:`V(f) \\le 0` (see :class:`Certificate`).
    No probability enters: ``f`` is any non-negative weight. Sums run over the last dimension
    in float64, so a batch of steps is one call with inputs of shape ``(n, d)``.

    References:
        The first author's blog, posts 2026-08-03-two-dimensional-adam (section "The
        guarantee") and 2026-08-04-certifying-two-task-steps (level (i)); the blog writes the
        step :math:`\\Delta = -u`. The authors' OPT code (``unlearn/NGradFocusOPT.py``) tests
        the same inequalities per parameter tensor.

    Args:
        f: the weights, >= 0, e.g. :func:`feasible.masks.focus`; any shape.
        g_u: the batch gradient of the unlearning loss, same shape.
        g_c: the batch gradient of the constraint loss, same shape.
        alpha: the weight of ``g_u``, > 0.
        beta: the weight of ``g_c``, > 0.

    Returns:
        A :class:`Certificate` of float64 tensors, the last dimension summed out.

    Raises:
        ValueError: ``alpha`` or ``beta`` not > 0, a negative weight, or shapes that differ.
    """
    for name, value in (("alpha", alpha), ("beta", beta)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"The '{name}' parameter of focus_certificate must be a float > 0. "
                             f"Got {value!r} instead.")
    for name, t in (("g_u", g_u), ("g_c", g_c)):
        if t.shape != f.shape:
            raise ValueError(f"The 'f' and '{name}' tensors of focus_certificate must have the "
                             f"same shape. Got {tuple(f.shape)} and {tuple(t.shape)} instead.")
    if (f < 0).any():
        raise ValueError("The 'f' argument of focus_certificate must be >= 0 everywhere. "
                         "Got a negative value.")
    f, g_u, g_c = (t.double() for t in (f, g_u, g_c))
    s_uu, s_cc, s_uc = ((f * a * b).sum(-1) for a, b in ((g_u, g_u), (g_c, g_c), (g_u, g_c)))
    violation = -s_uc - torch.minimum(alpha / beta * s_uu, beta / alpha * s_cc)
    u = f * (alpha * g_u + beta * g_c)
    return Certificate(violation, s_uu, s_cc, s_uc, (u * g_u).sum(-1), (u * g_c).sum(-1))


class EmaBounds(NamedTuple):
    """What the authors' running second moment implies for ``z = g / s``, ``phi`` and ``P``.

    ``z_first`` bounds :math:`\\lvert z \\rvert` at the first step, ``z_later`` from the second
    on; ``phi_low``/``phi_high`` and ``prob_low``/``prob_high`` are the ranges of
    :math:`\\varphi = \\Phi(z)` and of the agreement probability from the second step on. All
    bounds are strict while :math:`\\varepsilon > 0`.
    """

    z_first: float
    z_later: float
    phi_low: float
    phi_high: float
    prob_low: float
    prob_high: float


def ema_bounds(rho: float = 0.9) -> EmaBounds:
    """The bounds that :func:`feasible.noise.ema_scale`'s recurrence puts on ``z``, ``phi``, ``P``.

    :math:`V_1 = (1 - \\rho) \\hat g_1^2` gives :math:`\\lvert z_1 \\rvert < 1/\\sqrt{1 - \\rho}`;
    :math:`V_t = \\rho \\hat g_t^2 + (1 - \\rho) V_{t-1} \\ge \\rho \\hat g_t^2` gives
    :math:`\\lvert z_t \\rvert < 1/\\sqrt{\\rho}` for :math:`t \\ge 2`, whatever the history.
    Then :math:`\\varphi \\in (\\Phi(-1/\\sqrt\\rho), \\Phi(1/\\sqrt\\rho))` and, since
    :math:`P = 1/2 + 2 (\\varphi_U - 1/2)(\\varphi_C - 1/2)`,
    :math:`\\lvert P - 1/2 \\rvert < 2 (\\Phi(1/\\sqrt\\rho) - 1/2)^2`. At :math:`\\rho = 0.9`:
    3.162, 1.054, (0.146, 0.854) and (0.249, 0.751).

    References:
        The recurrence of the authors' code (``unlearn/NGradFocus.py``, ``NGradMask.py`` and
        their SR and OPT siblings in ``owl1996/UnlearningFocusVector``, ``rho = 0.9``); the
        bounds are this project's algebra.

    Args:
        rho: the weight of the new squared gradient, in (0, 1); at 1 the first bound is infinite.

    Returns:
        An :class:`EmaBounds`.

    Raises:
        ValueError: ``rho`` outside (0, 1].
    """
    if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not 0 < rho <= 1:
        raise ValueError(f"The 'rho' parameter of ema_bounds must be a float in (0, 1]. "
                         f"Got {rho!r} instead.")
    z_first = math.inf if rho == 1 else 1.0 / math.sqrt(1.0 - rho)
    z_later = 1.0 / math.sqrt(rho)
    half_width = 0.5 * math.erf(z_later / math.sqrt(2.0))  # Phi(z) - 1/2
    return EmaBounds(z_first, z_later, 0.5 - half_width, 0.5 + half_width,
                     0.5 - 2.0 * half_width**2, 0.5 + 2.0 * half_width**2)


def agreement_probability_as_coded(g_u: Tensor, g_c: Tensor, se_u: Tensor,
                                   se_c: Tensor) -> Tensor:
    """The agreement probability by the uncentred formula, in the inputs' dtype.

    :math:`\\varphi = \\tfrac12 (1 + \\mathrm{erf}(z / \\sqrt 2))` (what
    ``torch.distributions.Normal(0, 1).cdf`` computes) and
    :math:`P = \\varphi_U \\varphi_C + (1 - \\varphi_U)(1 - \\varphi_C)`, as the authors' code
    writes it. Mathematically equal to :func:`feasible.masks.agreement_probability`, which
    computes :math:`P - 1/2 = 2 (\\varphi_U - 1/2)(\\varphi_C - 1/2)` in centred form; in float32
    with :math:`\\lvert z \\rvert` small the uncentred sum rounds to exactly 1/2, or to the wrong
    side of it, so that ``P >= 1/2`` is no longer the sign agreement. This function exists to
    measure that difference; the library never uses it.

    References:
        The authors' code, ``unlearn/NGradMask.py`` and ``NGradFocus.py`` (``normal_dist.cdf``,
        ``vmask``) in ``owl1996/UnlearningFocusVector``.

    Args:
        g_u: the unlearning gradient estimate, any shape.
        g_c: the constraint gradient estimate, same shape.
        se_u: its scale, same shape, > 0.
        se_c: likewise for ``g_c``.

    Returns:
        :math:`P`, same shape and dtype as ``g_u``.

    Raises:
        ValueError: shapes that differ, or a scale that is not > 0.
    """
    _validate_pair(g_u, g_c, se_u, se_c, "agreement_probability_as_coded")
    if not ((se_u > 0).all() and (se_c > 0).all()):
        raise ValueError("The 'se_u' and 'se_c' arguments of agreement_probability_as_coded "
                         "must be > 0 everywhere. Got a zero.")
    root_half = math.sqrt(0.5)
    phi_u = 0.5 * (1 + torch.erf(g_u / se_u * root_half))
    phi_c = 0.5 * (1 + torch.erf(g_c / se_c * root_half))
    return phi_u * phi_c + (1.0 - phi_u) * (1.0 - phi_c)


class GuaranteeMonteCarlo(NamedTuple):
    """The result of :func:`focus_guarantee_monte_carlo`.

    ``estimates`` maps each quantity to its mean over the draws and that mean's standard error:
    ``"<ghat_u, ghat_c>"``, ``"S_uc"`` (:math:`\\tilde S_{UC}`), ``"<u, g_u>"``,
    ``"<u, g_c>"`` (the focus step against the true gradients), ``"<a, g_u>"``, ``"<a, g_c>"``
    (the plain linG step), and ``"lift_u"``, ``"lift_c"``, the means of
    :math:`\\langle u, g_k - \\lambda_k \\hat g_k \\rangle` with
    :math:`\\lambda_k = \\tau^2 / (\\tau^2 + s_k^2)`, which vanish where the lift
    :math:`E[g_k \\mid \\hat g] = \\lambda_k \\hat g_k` holds. ``pathwise_slack`` is the least
    value over the draws of :math:`\\tilde S_{UC} - \\tfrac12 \\langle \\hat g_U, \\hat g_C
    \\rangle`, and ``certified`` the share of draws whose batch certificate holds.
    """

    estimates: dict[str, MonteCarlo]
    pathwise_slack: float
    certified: float


def focus_guarantee_monte_carlo(
    *,
    n_draws: int,
    dim: int,
    generator: torch.Generator,
    rho: float = 0.0,
    tau: float = 1.0,
    se_u: float = 1.0,
    se_c: float = 1.0,
    alpha: float = 0.8,
    beta: float = 0.5,
    chunk: int = 1000,
) -> GuaranteeMonteCarlo:
    """Monte Carlo of the focus step against the true gradients, in a Gaussian model.

    Each draw takes true gradients with i.i.d. coordinates, :math:`g_{U,i} \\sim N(0, \\tau^2)`
    and :math:`g_{C,i} = \\rho g_{U,i} + \\sqrt{1 - \\rho^2}\\, \\xi_i` (:math:`\\xi_i \\sim
    N(0, \\tau^2)`), batch estimates :math:`\\hat g_k = g_k + s_k \\varepsilon_k`, the authors'
    focus vector :math:`f = P` (:func:`feasible.masks.focus` with the true scales) and the step
    :math:`u = f \\odot (\\alpha \\hat g_U + \\beta \\hat g_C)`. At ``rho = 0`` the paper's
    hypothesis holds: :math:`E \\langle \\hat g_U, \\hat g_C \\rangle = E \\langle g_U, g_C
    \\rangle = 0`. The two losses are then independent, so :math:`E[g_k \\mid \\hat g] =
    \\lambda_k \\hat g_k` exactly and :math:`E \\langle u, g_k \\rangle = \\lambda_k E \\langle
    u, \\hat g_k \\rangle \\ge 0`. With ``rho < 0`` the true gradients conflict and that lift
    fails.

    References:
        Dine, Furon and Faure (2025), Prop. 6, and its hypothesis as the first author's blog
        quotes it (post 2026-08-03-two-dimensional-adam, "The guarantee"). The model, a
        proper Gaussian prior in place of the blog's flat one, is this project's.

    Args:
        n_draws: the number of draws, >= 2.
        dim: coordinates per draw, >= 1.
        generator: the random generator (seeded by the caller).
        rho: the correlation of :math:`g_{U,i}` and :math:`g_{C,i}` on every coordinate, in
            (-1, 1); 0 is the paper's hypothesis.
        tau: the prior scale of the true gradients, > 0.
        se_u: the noise scale of ``ghat_U``, > 0.
        se_c: the noise scale of ``ghat_C``, > 0.
        alpha: the weight of ``ghat_U`` in the step, > 0.
        beta: the weight of ``ghat_C``, > 0.
        chunk: draws held in memory at once, >= 1.

    Returns:
        A :class:`GuaranteeMonteCarlo`.

    Raises:
        ValueError: a value outside its range.
    """
    if isinstance(n_draws, bool) or not isinstance(n_draws, int) or n_draws < 2:
        raise ValueError("The 'n_draws' parameter of focus_guarantee_monte_carlo must be an "
                         f"int >= 2. Got {n_draws!r} instead.")
    _check_positive_int("dim", "focus_guarantee_monte_carlo", dim)
    _check_positive_int("chunk", "focus_guarantee_monte_carlo", chunk)
    if not -1 < rho < 1:
        raise ValueError("The 'rho' parameter of focus_guarantee_monte_carlo must be in "
                         f"(-1, 1). Got {rho!r} instead.")
    for name, value in (("tau", tau), ("se_u", se_u), ("se_c", se_c), ("alpha", alpha),
                        ("beta", beta)):
        if not value > 0:
            raise ValueError(f"The '{name}' parameter of focus_guarantee_monte_carlo must be "
                             f"> 0. Got {value!r} instead.")
    lam_u, lam_c = tau**2 / (tau**2 + se_u**2), tau**2 / (tau**2 + se_c**2)
    columns: dict[str, list[Tensor]] = {}
    slack, certified = math.inf, 0
    done = 0
    while done < n_draws:
        rows = min(chunk, n_draws - done)

        def normal() -> Tensor:
            return torch.randn(rows, dim, generator=generator, dtype=torch.float64)

        g_u = tau * normal()
        g_c = rho * g_u + math.sqrt(1.0 - rho**2) * tau * normal()
        h_u, h_c = g_u + se_u * normal(), g_c + se_c * normal()
        f = masks.focus(h_u, h_c, torch.full_like(h_u, se_u), torch.full_like(h_c, se_c))
        a = alpha * h_u + beta * h_c
        u = f * a
        cert = focus_certificate(f, h_u, h_c, alpha=alpha, beta=beta)
        values = {
            "<ghat_u, ghat_c>": (h_u * h_c).sum(1),
            "S_uc": cert.s_uc,
            "<u, g_u>": (u * g_u).sum(1),
            "<u, g_c>": (u * g_c).sum(1),
            "<a, g_u>": (a * g_u).sum(1),
            "<a, g_c>": (a * g_c).sum(1),
            "lift_u": (u * (g_u - lam_u * h_u)).sum(1),
            "lift_c": (u * (g_c - lam_c * h_c)).sum(1),
        }
        for name, value in values.items():
            columns.setdefault(name, []).append(value)
        slack = min(slack, float((cert.s_uc - 0.5 * values["<ghat_u, ghat_c>"]).min()))
        certified += int((cert.violation <= 0).sum())
        done += rows
    estimates = {}
    for name, parts in columns.items():
        x = torch.cat(parts)
        estimates[name] = MonteCarlo(x.mean(), x.std() / math.sqrt(n_draws))
    return GuaranteeMonteCarlo(estimates, slack, certified / n_draws)


# ---------------------------------------------------------------------------------------------
# Batch draws without re-running the model: per-sample gradients once, then index arithmetic.
# ---------------------------------------------------------------------------------------------


def per_sample_gradients(model: nn.Module, loss_fn: LossFn, batch: Batch, *,
                         chunk: int = 256) -> Tensor:
    """The gradient of ``loss_fn`` on each example of ``batch``, one flat row per example.

    Exact per-sample gradients (:func:`feasible.noise.per_sample_chunks`), in the order of :func:`feasible.demo.flatten` (the model's trainable
    parameters). The mean of the rows over any subset is the batch-mean gradient of that subset
    for a model without cross-sample coupling (no BatchNorm in training mode): the book draws
    many batches from these rows without running the model again. The model is not modified.

    References:
        This project's tool for the book's measurements; :func:`feasible.noise.grad_stats`
        (``method="per_sample"``) computes the same gradients batch by batch.

    Args:
        model: the network, in eval mode or without BatchNorm.
        loss_fn: ``(outputs, targets) -> mean loss``.
        batch: ``(x, y)``, every example of the set.
        chunk: examples per vmap call, >= 1.

    Returns:
        A tensor of shape ``(len(y), d)``, ``d`` the number of trainable parameters.

    Raises:
        ValueError: ``chunk < 1``.
    """
    _check_positive_int("chunk", "per_sample_gradients", chunk)
    x, y = batch
    rows = [torch.cat([g.reshape(g.shape[0], -1) for g in grads.values()], dim=1)
            for grads, _ in noise.per_sample_chunks(model, loss_fn, x, y, chunk)]
    return torch.cat(rows).detach()


def paired_batch_inner_products(grads_u: Tensor, grads_c: Tensor, *, batch_size: int,
                                n_draws: int, generator: torch.Generator) -> Tensor:
    """:math:`\\langle \\hat g_U, \\hat g_C \\rangle` for independent random batch pairs.

    Each draw takes ``batch_size`` rows of ``grads_u`` and of ``grads_c`` without replacement
    (the first ``batch_size`` of a uniformly random order), independently; the inner
    product of the two batch means is the mean of the Gram matrix
    ``grads_u @ grads_c.T`` (float64) over the drawn rows and columns. Its expectation is the
    inner product of the full means.

    References:
        The hypothesis :math:`E \\langle \\hat g_U, \\hat g_C \\rangle = 0` of Dine, Furon and
        Faure (2025), Prop. 6, as the first author's blog quotes it; the measurement is this
        project's.

    Args:
        grads_u: per-sample gradients of the unlearning loss, shape ``(n_u, d)``.
        grads_c: per-sample gradients of the constraint loss, shape ``(n_c, d)``.
        batch_size: rows per batch, in ``[1, min(n_u, n_c)]``.
        n_draws: the number of batch pairs, >= 1.
        generator: the random generator (seeded by the caller).

    Returns:
        A float64 tensor of ``n_draws`` inner products.

    Raises:
        ValueError: a bad ``batch_size`` or ``n_draws``, or mismatched widths.
    """
    if grads_u.dim() != 2 or grads_c.dim() != 2 or grads_u.shape[1] != grads_c.shape[1]:
        raise ValueError("The 'grads_u' and 'grads_c' tensors of paired_batch_inner_products "
                         "must be 2-D with the same number of columns. Got "
                         f"{tuple(grads_u.shape)} and {tuple(grads_c.shape)} instead.")
    n_u, n_c = grads_u.shape[0], grads_c.shape[0]
    fits = isinstance(batch_size, int) and 1 <= batch_size <= min(n_u, n_c)
    if isinstance(batch_size, bool) or not fits:
        raise ValueError("The 'batch_size' parameter of paired_batch_inner_products must be an "
                         f"int in [1, {min(n_u, n_c)}]. Got {batch_size!r} instead.")
    _check_positive_int("n_draws", "paired_batch_inner_products", n_draws)
    gram = grads_u.double() @ grads_c.double().T
    values = []
    for start in range(0, n_draws, 512):  # 512 draws at a time bound the memory
        rows_k = min(512, n_draws - start)
        rows = torch.rand(rows_k, n_u, generator=generator).argsort(dim=1)[:, :batch_size]
        cols = torch.rand(rows_k, n_c, generator=generator).argsort(dim=1)[:, :batch_size]
        values.append(gram[rows[:, :, None], cols[:, None, :]].mean(dim=(1, 2)))
    values = torch.cat(values)
    return values
