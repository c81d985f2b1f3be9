"""Small exact problems and alignment measurements behind the theory pages (Props. 1-3)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from scipy.optimize import minimize
from scipy.special import log_softmax, softmax
from torch import Tensor, nn

from feasible.demo import Batch, ce, flatten, full_gradient, neg_ce, sample_batch
from feasible.masks import and_mask, lin_g, min_g

__all__ = [
    "AGGREGATES",
    "KKTFit",
    "ProblemPSolution",
    "SoftmaxProblem",
    "batch_alignment",
    "cosine",
    "digits_softmax_problem",
    "feasible_cone",
    "kkt_fit",
    "softmax_ce",
    "solve_problem_p",
    "step_outcomes",
    "step_size_bound",
]

#: The aggregators the pages compare, by the paper's names (linG, MinG).
AGGREGATES: dict[str, Callable[..., Tensor]] = {"lin": lin_g, "min": min_g}


# --- a softmax regression on the digits: problem (P) solved exactly ------------------------------

def softmax_ce(theta: np.ndarray, x: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of a softmax regression against target distributions, and its gradient.

    Args:
        theta: the flat weights, of length ``x.shape[1] * targets.shape[1]`` (features by classes,
            row-major; a bias is a constant feature of ``x``).
        x: features, shape ``(n, features)``.
        targets: one probability distribution per row, shape ``(n, classes)`` (one-hot rows give
            the usual cross-entropy; uniform rows give the cross-entropy to the uniform label).

    Returns:
        The loss and its gradient with respect to ``theta`` (same shape as ``theta``).
    """
    w = theta.reshape(x.shape[1], targets.shape[1])
    logits = x @ w
    loss = -(targets * log_softmax(logits, axis=1)).sum() / len(x)
    grad = x.T @ (softmax(logits, axis=1) - targets) / len(x)
    return float(loss), grad.ravel()


@dataclass(frozen=True)
class SoftmaxProblem:
    """An unlearning problem (P) for a softmax regression on PCA features of the digits.

    ``L_U`` is the cross-entropy of the forget set's predictions to the uniform label (the
    expectation of RL's random-label loss, bounded below by ``log(classes)``), ``L_C`` the
    cross-entropy on the retain set; ``theta0`` minimises the ridge-regularised cross-entropy on
    forget and retain sets together.

    Attributes:
        x_forget: forget features with a final bias column of ones, shape ``(n_f, k + 1)``.
        y_forget: forget labels, shape ``(n_f,)``.
        x_retain: retain features, shape ``(n_r, k + 1)``.
        y_retain: retain labels, shape ``(n_r,)``.
        num_classes: the number of classes (10).
        theta0: the original model, flat, of length ``(k + 1) * num_classes``.
    """

    x_forget: np.ndarray
    y_forget: np.ndarray
    x_retain: np.ndarray
    y_retain: np.ndarray
    num_classes: int
    theta0: np.ndarray

    def loss_u(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """``L_U``: the cross-entropy of the forget set to the uniform label, and its gradient."""
        uniform = np.full((len(self.y_forget), self.num_classes), 1.0 / self.num_classes)
        return softmax_ce(theta, self.x_forget, uniform)

    def loss_c(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """``L_C``: the cross-entropy on the retain set, and its gradient."""
        return softmax_ce(theta, self.x_retain, np.eye(self.num_classes)[self.y_retain])

    def as_module(self, theta: np.ndarray | None = None) -> tuple[nn.Module, Batch, Batch]:
        """The regression as a torch model, with the forget and retain sets as tensors.

        Args:
            theta: the flat weights (``theta0`` when omitted).

        Returns:
            ``(model, forget, retain)``: a bias-free ``nn.Linear`` (float32, eval mode) on the
            features, and the two sets as ``(x, y)`` tensors, so that the network helpers of this
            module (e.g. :func:`batch_alignment`) apply to it unchanged.
        """
        weights = self.theta0 if theta is None else theta
        model = nn.Linear(self.x_forget.shape[1], self.num_classes, bias=False)
        with torch.no_grad():
            model.weight.copy_(torch.from_numpy(weights.reshape(-1, self.num_classes).T.copy()))
        forget = (torch.from_numpy(self.x_forget).float(), torch.from_numpy(self.y_forget).long())
        retain = (torch.from_numpy(self.x_retain).float(), torch.from_numpy(self.y_retain).long())
        return model.eval(), forget, retain

    def smoothness(self) -> float:
        """A global smoothness constant ``L`` valid for both losses (Böhning's bound).

        The Hessian of a softmax cross-entropy does not depend on the targets and is at most
        ``(1/2) I ⊗ X^T X / n`` (Böhning, 1992), so ``L = max`` over both sets of half the largest
        eigenvalue of ``X^T X / n``.

        Returns:
            The constant ``L > 0``.
        """
        return max(
            0.5 * float(np.linalg.eigvalsh(x.T @ x / len(x))[-1]) for x in (self.x_forget, self.x_retain)
        )


def digits_softmax_problem(
    *, seed: int = 0, components: int = 10, forget_fraction: float = 0.1, ridge: float = 1e-3
) -> SoftmaxProblem:
    """Build :class:`SoftmaxProblem` on scikit-learn's digits (all 1797 images), in well under a second.

    The images are scaled to [0, 1], projected on their first ``components`` principal axes and
    standardised; a random ``forget_fraction`` of them forms the forget set. ``theta0`` minimises
    ``CE(D) + ridge/2 ||theta||^2`` by L-BFGS (the ridge keeps it finite on separable data).

    Args:
        seed: seeds the forget split.
        components: the number of principal components, >= 1 and <= 64.
        forget_fraction: the share of images to forget, in the open interval (0, 1).
        ridge: the ridge weight of the original training, > 0.

    Returns:
        The problem, with ``theta0`` of length ``(components + 1) * 10``.

    Raises:
        ValueError: if a parameter is out of its range.
    """
    from sklearn.datasets import load_digits

    if not 1 <= components <= 64:
        raise ValueError(
            "The 'components' parameter of digits_softmax_problem must be an int in [1, 64]. "
            f"Got {components!r} instead."
        )
    if not 0.0 < forget_fraction < 1.0:
        raise ValueError(
            "The 'forget_fraction' parameter of digits_softmax_problem must be a float in the open "
            f"interval (0, 1). Got {forget_fraction!r} instead."
        )
    if not ridge > 0:
        raise ValueError(
            f"The 'ridge' parameter of digits_softmax_problem must be > 0. Got {ridge!r} instead."
        )
    images, labels = load_digits(return_X_y=True)
    centred = images / 16.0 - (images / 16.0).mean(axis=0)
    axes = np.linalg.svd(centred, full_matrices=False)[2][:components]
    feats = centred @ axes.T
    feats = np.hstack([feats / feats.std(axis=0), np.ones((len(feats), 1))])
    order = np.random.default_rng(seed).permutation(len(labels))
    n_forget = max(1, round(forget_fraction * len(labels)))
    f, r = order[:n_forget], order[n_forget:]
    onehot = np.eye(10)[labels]

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        loss, grad = softmax_ce(theta, feats, onehot)
        return loss + 0.5 * ridge * theta @ theta, grad + ridge * theta

    start = np.zeros(feats.shape[1] * 10)
    theta0 = minimize(objective, start, jac=True, method="L-BFGS-B",
                      options={"gtol": 1e-10, "maxiter": 5000}).x
    return SoftmaxProblem(feats[f], labels[f], feats[r], labels[r], 10, theta0)


@dataclass(frozen=True)
class ProblemPSolution:
    """A solution of problem (P) by SLSQP.

    Attributes:
        theta: the solution, flat.
        multiplier: SLSQP's Lagrange multiplier of the constraint (>= 0).
        loss_u: ``L_U(theta)``.
        loss_c: ``L_C(theta)``.
        bound: the constraint's right-hand side ``L_C(theta0) + slack``.
        iterations: SLSQP's iteration count.
        success: whether SLSQP reports convergence.
    """

    theta: np.ndarray
    multiplier: float
    loss_u: float
    loss_c: float
    bound: float
    iterations: int
    success: bool


def solve_problem_p(problem: SoftmaxProblem, *, slack: float = 0.0) -> ProblemPSolution:
    """Solve (P): minimise ``L_U`` subject to ``L_C <= L_C(theta0) + slack``, from ``theta0``.

    References:
        Dine, Furon, Faure (2025), problem (P) and Prop. 1 (this project's reading: the slack is the project's, to show an
        inactive constraint).

    Args:
        problem: the problem.
        slack: the allowed increase of ``L_C``, >= 0.

    Returns:
        The solution found by scipy's SLSQP (tolerance 1e-12, at most 1000 iterations).

    Raises:
        ValueError: if ``slack`` is negative.
    """
    if not slack >= 0:
        raise ValueError(f"The 'slack' parameter of solve_problem_p must be >= 0. Got {slack!r} instead.")
    bound = problem.loss_c(problem.theta0)[0] + slack
    constraint = {
        "type": "ineq",
        "fun": lambda t: bound - problem.loss_c(t)[0],
        "jac": lambda t: -problem.loss_c(t)[1],
    }
    res = minimize(problem.loss_u, problem.theta0, jac=True, method="SLSQP", constraints=[constraint],
                   options={"maxiter": 1000, "ftol": 1e-12})
    multipliers = getattr(res, "multipliers", None)
    return ProblemPSolution(
        theta=res.x,
        multiplier=float(np.ravel(multipliers)[0]) if multipliers is not None else float("nan"),
        loss_u=problem.loss_u(res.x)[0],
        loss_c=problem.loss_c(res.x)[0],
        bound=bound,
        iterations=int(res.nit),
        success=bool(res.success),
    )


@dataclass(frozen=True)
class KKTFit:
    """How well ``g_U = -lambda g_C`` holds.

    Attributes:
        lam: the least-squares multiplier ``-<g_U, g_C> / ||g_C||^2``.
        cosine: the cosine between ``g_U`` and ``g_C`` (-1 when anti-collinear).
        residual: ``||g_U + lam g_C|| / ||g_U||`` (0 when exact).
    """

    lam: float
    cosine: float
    residual: float


def kkt_fit(g_u: np.ndarray, g_c: np.ndarray) -> KKTFit:
    """Fit the stationarity condition ``g_U + lambda g_C = 0`` of Prop. 1 by least squares.

    References:
        Dine, Furon, Faure (2025), Prop. 1 (this project's reading).

    Args:
        g_u: the gradient of ``L_U``, flat, not all zero.
        g_c: the gradient of ``L_C``, flat, same shape, not all zero.

    Returns:
        The multiplier, the cosine and the relative residual.
    """
    g_u, g_c = np.ravel(g_u), np.ravel(g_c)
    lam = -float(g_u @ g_c) / float(g_c @ g_c)
    norm_u = float(np.linalg.norm(g_u))
    return KKTFit(
        lam=lam,
        cosine=float(g_u @ g_c) / (norm_u * float(np.linalg.norm(g_c))),
        residual=float(np.linalg.norm(g_u + lam * g_c)) / norm_u,
    )


# --- Def. 1 and Prop. 2 --------------------------------------------------------------------------

def step_size_bound(u: np.ndarray, g_u: np.ndarray, g_c: np.ndarray, smoothness: float) -> float:
    """The step size below which a feasible update lowers both losses (Prop. 2).

    ``eta_max = 2 min(<u, g_U>, <u, g_C>) / (L ||u||^2)``; both ``L_U`` and ``L_C`` strictly decrease
    along ``theta - eta u`` for ``0 < eta < eta_max`` when both are ``L``-smooth.

    References:
        Dine, Furon, Faure (2025), Def. 1 and Prop. 2 (this project's reading).

    Args:
        u: the update (the step is ``-eta u``), flat, not all zero.
        g_u: the gradient of ``L_U`` at the current point, same shape.
        g_c: the gradient of ``L_C``, same shape.
        smoothness: a smoothness constant ``L > 0`` of both losses.

    Returns:
        ``eta_max``, or 0 when ``u`` is not strictly feasible (one inner product <= 0).

    Raises:
        ValueError: if ``smoothness`` is not positive or ``u`` is zero.
    """
    if not smoothness > 0:
        raise ValueError(
            f"The 'smoothness' parameter of step_size_bound must be > 0. Got {smoothness!r} instead."
        )
    u = np.ravel(u)
    norm2 = float(u @ u)
    if norm2 == 0:
        raise ValueError("The 'u' parameter of step_size_bound must be non-zero. Got a zero vector instead.")
    gain = min(float(u @ np.ravel(g_u)), float(u @ np.ravel(g_c)))
    return max(0.0, 2.0 * gain / (smoothness * norm2))


def feasible_cone(g_u: np.ndarray, g_c: np.ndarray, *, radius: float = 1.0, points: int = 64) -> np.ndarray:
    """The 2-D feasible cone ``{u : <u, g_U> >= 0, <u, g_C> >= 0}`` cut to a disc, as a polygon.

    References:
        Dine, Furon, Faure (2025), Def. 1 (this project's reading).

    Args:
        g_u: a 2-vector, not zero.
        g_c: a 2-vector, not zero.
        radius: the disc's radius, > 0.
        points: the number of points on the arc, >= 2.

    Returns:
        The polygon's vertices, shape ``(points + 1, 2)``: the origin, then the arc. The arc is
        empty (all points at the origin) when ``g_U`` and ``g_C`` are exactly opposite.
    """
    a = float(np.arctan2(g_u[1], g_u[0]))
    delta = float(np.angle(np.exp(1j * (np.arctan2(g_c[1], g_c[0]) - a))))  # in (-pi, pi]
    lo, hi = (a + delta - np.pi / 2, a + np.pi / 2) if delta >= 0 else (a - np.pi / 2, a + delta + np.pi / 2)
    angles = np.linspace(lo, hi, points)
    arc = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1) * (hi > lo)
    return np.vstack([np.zeros((1, 2)), arc])


# --- the digits network: alignment of batch estimates (Props. 2-3) --------------------------------

def cosine(a: Tensor, b: Tensor) -> float:
    """The cosine between two flat tensors (0 when one of them is zero)."""
    denom = float(a.norm() * b.norm())
    return float(a @ b) / denom if denom > 0 else 0.0


def _losses_at(model: nn.Module, flat: Tensor, forget: Batch, retain: Batch) -> tuple[float, float]:
    """``(L_U, L_C) = (-CE(forget), CE(retain))`` of ``model`` with its parameters set to ``flat``."""
    params, start = {}, 0
    for name, p in model.named_parameters():
        params[name] = flat[start:start + p.numel()].view_as(p)
        start += p.numel()
    with torch.no_grad():
        out_f = torch.func.functional_call(model, params, (forget[0],))
        out_r = torch.func.functional_call(model, params, (retain[0],))
        return float(neg_ce(out_f, forget[1])), float(ce(out_r, retain[1]))


def batch_alignment(
    model: nn.Module,
    forget: Batch,
    retain: Batch,
    *,
    batch_sizes: list[int],
    trials: int,
    seed: int = 0,
) -> list[dict[str, float]]:
    """How batch estimates of ``g_U = grad(-CE(D_f))`` and ``g_C = grad CE(D_r)`` align, by batch size.

    For each batch size and trial, a forget batch and a retain batch of that size (capped at the
    set's size) are drawn without replacement; their gradients are compared with each other and
    with the full-set gradients. "Active" coordinates have at least one non-zero estimate.

    References:
        Dine, Furon, Faure (2025), Prop. 3 (this project's reading); a coordinate is active when
        at least one of its batch gradients is non-zero.

    Args:
        model: the network at the point of interest (not modified).
        forget: the forget set ``(x, y)``.
        retain: the retain set ``(x, y)``.
        batch_sizes: the batch sizes, each >= 1.
        trials: draws per batch size, >= 1.
        seed: seeds the draws.

    Returns:
        A list with one record per draw, each holding ``batch_size``, ``trial``, ``cosine`` (between the two estimates),
        ``kept`` (share of active coordinates the AND mask keeps), ``precision`` (share of kept
        coordinates whose full-set gradients agree in sign), ``base_rate`` (share of active
        coordinates whose full-set gradients agree) and ``cosine_u_true`` (between the forget
        estimate and the full forget gradient).

    Raises:
        ValueError: if ``trials`` or a batch size is below 1.
    """
    if trials < 1 or min(batch_sizes) < 1:
        raise ValueError(
            "The 'trials' and 'batch_sizes' parameters of batch_alignment must be >= 1. "
            f"Got trials={trials!r}, batch_sizes={batch_sizes!r} instead."
        )
    true_u = flatten(full_gradient(model, neg_ce, forget))
    true_c = flatten(full_gradient(model, ce, retain))
    true_agree = and_mask(true_u, true_c).bool()
    gen = torch.Generator().manual_seed(seed)
    records = []
    for size in batch_sizes:
        for trial in range(trials):
            g_u = flatten(full_gradient(model, neg_ce, sample_batch(forget, min(size, len(forget[1])), gen)))
            g_c = flatten(full_gradient(model, ce, sample_batch(retain, min(size, len(retain[1])), gen)))
            active = (g_u != 0) | (g_c != 0)
            keep = and_mask(g_u, g_c).bool()
            records.append({
                "batch_size": size,
                "trial": trial,
                "cosine": cosine(g_u, g_c),
                "kept": float(keep[active].float().mean()),
                "precision": float(true_agree[keep].float().mean()) if keep.any() else float("nan"),
                "base_rate": float(true_agree[active].float().mean()),
                "cosine_u_true": cosine(g_u, true_u),
            })
    return records


def step_outcomes(
    model: nn.Module,
    forget: Batch,
    retain: Batch,
    *,
    batch_size: int,
    trials: int,
    lr: float,
    alpha: float = 0.8,
    beta: float = 0.5,
    agg: str = "lin",
    seed: int = 0,
) -> list[dict[str, float]]:
    """Take single steps from batch estimates and check, on the full sets, which lower both losses.

    Each trial draws a forget batch and a retain batch, forms ``a = Agg(g_U, g_C)`` from their
    gradients (``L_U = -CE`` on the forget batch, ``L_C = CE`` on the retain batch) and two
    updates, ``a`` and ``m_AND * a``; for each it records the first-order verdict (the signs of
    ``<u, g>`` with the full-set gradients, Def. 1) and the actual change of ``L_U`` and ``L_C`` over
    the full sets after the step ``theta - lr * u``.

    References:
        Dine, Furon, Faure (2025), Def. 1 and Prop. 2 (this project's reading).

    Args:
        model: the network at the starting point (not modified).
        forget: the forget set ``(x, y)``.
        retain: the retain set ``(x, y)``.
        batch_size: the size of both batches, >= 1 (capped at each set's size).
        trials: the number of draws, >= 1.
        lr: the step size, > 0.
        alpha: the weight on ``g_U``, >= 0.
        beta: the weight on ``g_C``, >= 0.
        agg: ``"lin"`` (linG) or ``"min"`` (MinG).
        seed: seeds the draws.

    Returns:
        A list with one record per draw and mask (``"none"`` or ``"and"``), each holding ``trial``, ``mask``, ``kept`` (share of
        coordinates kept), ``feasible`` (first-order, full-set gradients), ``d_loss_u``, ``d_loss_c``
        (the changes after the step) and ``both_lower``.

    Raises:
        ValueError: if a parameter is out of its range or ``agg`` is unknown.
    """
    if agg not in AGGREGATES:
        raise ValueError(f"Unknown aggregator {agg!r}; expected one of 'lin', 'min'.")
    if trials < 1 or batch_size < 1 or not lr > 0 or alpha < 0 or beta < 0:
        raise ValueError(
            "step_outcomes needs trials >= 1, batch_size >= 1, lr > 0, alpha >= 0 and beta >= 0. "
            f"Got trials={trials!r}, batch_size={batch_size!r}, lr={lr!r}, alpha={alpha!r}, "
            f"beta={beta!r} instead."
        )
    theta = flatten({n: p.detach() for n, p in model.named_parameters()})
    true_u = flatten(full_gradient(model, neg_ce, forget))
    true_c = flatten(full_gradient(model, ce, retain))
    loss_u0, loss_c0 = _losses_at(model, theta, forget, retain)
    gen = torch.Generator().manual_seed(seed)
    records = []
    for trial in range(trials):
        g_u = flatten(full_gradient(model, neg_ce, sample_batch(forget, min(batch_size, len(forget[1])), gen)))
        g_c = flatten(full_gradient(model, ce, sample_batch(retain, min(batch_size, len(retain[1])), gen)))
        a = AGGREGATES[agg](g_u, g_c, alpha=alpha, beta=beta)
        for name, keep in (("none", torch.ones_like(a)), ("and", and_mask(g_u, g_c).to(a.dtype))):
            u = keep * a
            loss_u, loss_c = _losses_at(model, theta - lr * u, forget, retain)
            records.append({
                "trial": trial,
                "mask": name,
                "kept": float(keep.mean()),
                "feasible": bool(float(u @ true_u) > 0 and float(u @ true_c) >= 0),
                "d_loss_u": loss_u - loss_u0,
                "d_loss_c": loss_c - loss_c0,
                "both_lower": bool(loss_u < loss_u0 and loss_c < loss_c0),
            })
    return records
