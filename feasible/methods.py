"""The base unlearning methods as data: losses, weights and batching."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from feasible._validate import names
from feasible.masks import ADDONS

__all__ = [
    "ADDON_USES",
    "RULES",
    "BATCHINGS",
    "PARTNER_STREAMS",
    "LOSSES",
    "METHODS",
    "PENALTIES",
    "Loss",
    "MethodSpec",
    "Pass",
    "ce",
    "l1_penalty_grad",
    "AdamScalar",
    "EUPMU_EPS",
    "class_balanced_indices",
    "eupmu_lambda",
    "eupmu_w_step",
    "l1_weight",
    "method_weights",
    "minnorm_coefficient",
    "orthogonal_part",
    "neg_ce",
    "passes",
    "random_label_ce",
    "shifted_label_ce",
]


# --- labels a loss is taken against -----------------------------------------------------------

def _true_labels(targets: Tensor, generator: torch.Generator, num_classes: int) -> Tensor:
    """The true labels, unchanged."""
    del generator, num_classes
    return targets


def _uniform_labels(targets: Tensor, generator: torch.Generator, num_classes: int) -> Tensor:
    """Labels drawn uniformly from all classes (the true one included), one per sample."""
    labels = torch.randint(num_classes, targets.shape, generator=generator, device=generator.device)
    return labels.to(targets.device)


def _shifted_labels(targets: Tensor, generator: torch.Generator, num_classes: int) -> Tensor:
    """Labels drawn uniformly from the classes other than the true one, one per sample."""
    shift = torch.randint(1, num_classes, targets.shape, generator=generator,
                          device=generator.device)
    return (targets + shift.to(targets.device)) % num_classes


def _ce(outputs: Tensor, labels: Tensor) -> Tensor:
    return F.cross_entropy(outputs, labels)


def _neg_ce(outputs: Tensor, labels: Tensor) -> Tensor:
    return -F.cross_entropy(outputs, labels)


class Loss(NamedTuple):
    """A loss in two parts: the labels it is taken against, then a criterion on those labels.

    The unlearning loop draws the labels once per visit of a batch (``relabel``) and hands the
    plain criterion to the gradient estimator, so that every micro-batch or per-sample gradient
    of one step sees the same random labels. Calling the loss does both at once.
    """

    #: ``(targets, generator, num_classes) -> labels``: the labels the loss is taken against.
    relabel: Callable[[Tensor, torch.Generator, int], Tensor]
    #: ``(outputs, labels) -> mean loss`` over the batch.
    criterion: Callable[[Tensor, Tensor], Tensor]

    def __call__(
        self, outputs: Tensor, targets: Tensor, generator: torch.Generator, num_classes: int
    ) -> Tensor:
        """The mean loss of ``outputs`` against labels derived from ``targets``."""
        return self.criterion(outputs, self.relabel(targets, generator, num_classes))


#: Cross-entropy against the true labels, the utility loss ``L_C`` of every method.
ce = Loss(_true_labels, _ce)
#: Negative cross-entropy against the true labels, gradient ascent's ``L_U``.
neg_ce = Loss(_true_labels, _neg_ce)
#: RL's ``L_U``: cross-entropy against labels drawn uniformly from all classes, so a drawn label
#: may equal the true one. As in SalUn's CIFAR-10/SVHN code (``unlearn/RL.py``), the labels are
#: redrawn at every visit of a sample (each batch of the forget pass draws fresh ones).
random_label_ce = Loss(_uniform_labels, _ce)
#: SRL's ``L_U`` as the authors code it (``unlearn/SRL.py`` of owl1996/UnlearningFocusVector):
#: cross-entropy against labels redrawn at every visit, ``(y + U{1..C-1}) mod C``, uniformly among
#: the classes other than the true one, so never the true label. (DeepUnlearn's SRL draws from
#: all classes instead: :data:`random_label_ce`.)
shifted_label_ce = Loss(_shifted_labels, _ce)

#: The losses a method may name, by name.
LOSSES: dict[str, Loss] = {
    "ce": ce,
    "neg_ce": neg_ce,
    "random_label_ce": random_label_ce,
    "shifted_label_ce": shifted_label_ce,
}


# --- penalties added to L_C --------------------------------------------------------------------

def l1_penalty_grad(params: dict[str, Tensor], weight: float) -> dict[str, Tensor]:
    """The gradient of ``weight * ||theta||_1``: ``weight * sign(theta)`` (0 where theta is 0).

    Args:
        params: the parameters, name to tensor.
        weight: the penalty's weight ``gamma_t`` at this step, >= 0.

    Returns:
        One tensor per parameter, same shapes.
    """
    return {name: weight * torch.sign(p.detach()) for name, p in params.items()}


def l1_weight(gamma: float, epoch: int, epochs: int) -> float:
    """The weight ``gamma_t`` of the l1 penalty in a 0-based ``epoch`` of ``epochs``.

    SalUn's ``FT_l1`` decays it linearly per epoch, ``gamma * (1 - epoch / epochs)``, from
    ``gamma`` in the first epoch to ``gamma / epochs`` in the last (with ``no_l1_epochs = 0``).

    References:
        SalUn's ``FT_l1`` (``Classification/unlearn/FT.py`` of OPTML-Group/Unlearn-Saliency).

    Args:
        gamma: the initial weight, >= 0.
        epoch: the current epoch, 0-based.
        epochs: the number of epochs of the run, >= 1.

    Returns:
        The weight for that epoch.
    """
    return gamma * (1.0 - epoch / epochs)


#: Penalties a method may add to its ``L_C``: name -> ``(params, weight) -> gradient``. The
#: penalty is deterministic, so it adds to the mean gradient and leaves its standard error as is.
PENALTIES: dict[str, Callable[[dict[str, Tensor], float], dict[str, Tensor]]] = {
    "l1": l1_penalty_grad,
}


# --- batching ----------------------------------------------------------------------------------

class Pass(NamedTuple):
    """One pass of an epoch over one set, with the factors on the method's two weights."""

    #: The set the pass iterates over once, ``"forget"`` or ``"retain"`` (batches of the other
    #: set are drawn alongside only when their gradient is needed), or ``"union"`` (the mixed
    #: batching, one shuffled pass over both sets together, each batch split into its forget and
    #: retain parts).
    over: str
    #: Multiplies ``alpha`` during the pass (0 switches ``g_U`` off).
    alpha_factor: float
    #: Multiplies ``beta`` during the pass (0 switches ``g_C`` off).
    beta_factor: float


#: What each batching means. "paired", "retain" and "forget" are one pass over ``epoch_over``
#: with batches of the other set drawn alongside (see :data:`PARTNER_STREAMS`); they differ only
#: in which gradients the method weights (the loop draws a partner batch only when its gradient
#: has a non-zero weight or an add-on needs both gradients). "sequential" is SalUn's RL
#: protocol: a forget pass with ``beta = 0``, then a retain pass with ``alpha = 0``. "mixed" is
#: DeepUnlearn's: D_f and D_r concatenated and shuffled, one pass per epoch, each batch's loss
#: the mean over its samples, so a batch with ``n_f`` forget and ``n_r`` retain samples weighs
#: the mean gradients of its two parts by ``alpha * n_f / n`` and ``beta * n_r / n``.
BATCHINGS: tuple[str, ...] = ("paired", "sequential", "retain", "forget", "mixed")

#: Where the partner batches of a pass come from, by name.
#:
#: ``"cycle"`` (this project's) is one shuffled stream of the other set that runs on across
#: epochs, reshuffled each time it is used up. ``"epoch"`` (the authors') is a fresh shuffled
#: pass of the other set at the start of every epoch (their ``retain_loader`` is re-made in each
#: epoch), reshuffled within the epoch only if used up.
PARTNER_STREAMS: tuple[str, ...] = ("cycle", "epoch")

#: How a method turns its two gradients into a step, by name. ``"linear"`` (every method of the
#: paper): ``alpha * g_U + beta * g_C`` with fixed weights, then the add-on. ``"eupmu"``: the
#: explicit form of EUPMU's unilateral gradient surgery, ``g_f + lambda* g_r`` with
#: :func:`eupmu_lambda` per step (two backward passes), clipped, then the add-on.
#: ``"eupmu_implicit"``: EUPMU's implicit form, one backward pass of ``w log L_r + log L_f`` over
#: a mixed batch, ``w`` adapted after each step (:func:`eupmu_w_step`). ``"minnorm_og"``:
#: MinNorm-OG, a step towards the minimum-norm solution orthogonal to the retain samples'
#: output gradients (:func:`orthogonal_part`) before each retain-loss step.
RULES: tuple[str, ...] = ("linear", "eupmu", "eupmu_implicit", "minnorm_og")


@dataclass(frozen=True)
class MethodSpec:
    """A first-order unlearning method as a record: what the one loop needs to know.

    Attributes:
        name: the method's short name (a key of :data:`METHODS`).
        loss_u: the unlearning loss ``L_U`` on the forget set, a key of :data:`LOSSES`.
        loss_c: the utility loss ``L_C`` on the retain set, a key of :data:`LOSSES`.
        alpha: the default weight on ``g_U`` (>= 0).
        beta: the default weight on ``g_C`` (>= 0).
        batching: one of :data:`BATCHINGS`.
        lr: the default learning rate for plain SGD (momentum 0).
        epoch_over: the set one epoch passes over: ``"forget"``, ``"retain"``, or ``"both"``
            for the sequential batching (a forget pass then a retain pass) and the mixed one
            (one pass over the union).
        uses: the names of the :class:`feasible.unlearn.UnlearnConfig` fields that only this
            method reads (a configuration hash ignores them for other methods).
        description: one line for tables and the command line, saying whose form it is.
        penalty: a key of :data:`PENALTIES` added to ``L_C``, or ``None``.
        partner: a key of :data:`PARTNER_STREAMS`: how batches of the other set are drawn.
        rule: a key of :data:`RULES`: how the two gradients become a step.
        addons: the add-ons (keys of :data:`feasible.masks.ADDONS`) the method combines with,
            or ``None`` for all of them.
    """

    name: str
    loss_u: str
    loss_c: str
    alpha: float
    beta: float
    batching: str
    lr: float
    epoch_over: str
    uses: tuple[str, ...]
    description: str
    penalty: str | None = None
    partner: str = "cycle"
    rule: str = "linear"
    addons: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for field in ("loss_u", "loss_c"):
            if getattr(self, field) not in LOSSES:
                raise ValueError(
                    f"Unknown loss {getattr(self, field)!r} for {field} of method {self.name!r}; "
                    f"expected one of {names(LOSSES)}."
                )
        if self.batching not in BATCHINGS:
            raise ValueError(
                f"Unknown batching {self.batching!r} of method {self.name!r}; "
                f"expected one of {names(BATCHINGS)}."
            )
        expected = {"sequential": ("both",), "mixed": ("both",), "retain": ("retain",),
                    "forget": ("forget",), "paired": ("forget", "retain")}[self.batching]
        if self.epoch_over not in expected:
            raise ValueError(
                f"The 'epoch_over' field of method {self.name!r} must be one of {names(expected)} "
                f"for batching {self.batching!r}. Got {self.epoch_over!r} instead."
            )
        if self.penalty is not None and self.penalty not in PENALTIES:
            raise ValueError(
                f"Unknown penalty {self.penalty!r} of method {self.name!r}; "
                f"expected None or one of {names(PENALTIES)}."
            )
        if self.partner not in PARTNER_STREAMS:
            raise ValueError(
                f"Unknown partner stream {self.partner!r} of method {self.name!r}; "
                f"expected one of {names(PARTNER_STREAMS)}."
            )
        if self.rule not in RULES:
            raise ValueError(
                f"Unknown rule {self.rule!r} of method {self.name!r}; "
                f"expected one of {names(RULES)}."
            )
        if self.addons is not None and not set(self.addons) <= set(ADDONS):
            raise ValueError(
                f"Unknown add-ons {sorted(set(self.addons) - set(ADDONS))} of method "
                f"{self.name!r}; expected some of {names(ADDONS)}."
            )
        if self.alpha < 0 or self.beta < 0 or self.lr <= 0:
            raise ValueError(f"Method {self.name!r} needs alpha, beta >= 0 and lr > 0.")


# The default learning rates are for plain SGD (momentum 0, no weight decay; SalUn's ranges are
# with momentum 0.9, about 10x smaller), the optimiser of the "harness" protocol; the authors'
# protocol (feasible.unlearn.PROTOCOLS) sets Adam at 1e-4 for every method instead. Measured at
# the smoke scale (digits, the smoke MLP of feasible.experiment trained to 100% train / 99.1%
# test accuracy, random 10% forgetting: UA 0.0 for the original, 5.8 for the retrained model;
# batch 128, 5 epochs, add-on "none"). FT, l1-sparse and NGPlus moved UA at no rate that did not
# collapse the model there, so they keep the small-CNN scale's. These are starting points: each
# scale tunes its own.
#: The default plain-SGD rates of the three related methods, measured at the smoke scale as the
#: others (digits MLP, random 10 %, batch 128, 5 epochs; retrained UA 5.8, MIA 9.1): EUPMU at
#: 0.3 reaches UA 4.1 at RA 98.6 (0.5: UA 6.6, RA 96.1; 1.0: UA 26.4, RA 87.3); the implicit
#: form at 0.1 reaches UA 4.1, RA 99.3, MIA 10.7 (0.2: UA 9.9, RA 93.4); MinNorm-OG keeps FT's
#: 0.5 (its projections, one per epoch there, move UA to 18.2 at RA 78.8 with c = 0.1, not at
#: all with c = 0.01). Their authors' code uses SGD with momentum 0.9 at 1e-3 (EUPMU, random
#: 10 %, ``train_scripts/cifar-10/unlearning_methods/10%/eu.sh``) and AdamW at 1e-3 to 1e-6
#: (MinNorm-OG, ``configs/erase``). At the cpu scale (small CNN, Fashion-MNIST, seed 0, random
#: 10 %, after one epoch; retrained UA 8.9, RA 100.0; FT at its 0.5: UA 17.8, RA 81.1) MinNorm-OG
#: at 0.5 collapses (UA 89.4, RA 10.1) and at 0.05 reaches UA 6.9, RA 92.0; EUPMU at 0.3: UA 29.8,
#: RA 72.5 (0.1: 18.4, 82.0); the implicit form at 0.1: UA 26.4, RA 73.7 (0.03: 15.6, 85.6).
LR_EUPMU = 0.3
LR_EUPMU_IMPLICIT = 0.1
LR_MINNORM = 0.5

#: The base methods by name. ``ngplus`` and ``srl`` are this project's forms (the literature
#: harness's, used by the committed records); ``ngplus_authors`` and ``srl_authors`` are the
#: authors' (``unlearn/NGPlus.py``, ``unlearn/SRL.py`` of owl1996/UnlearningFocusVector), and
#: ``srl_deepunlearn`` is DeepUnlearn's (``munl/unlearning/successive_random_labels.py`` of
#: xcadet/deepunlearn).
METHODS: dict[str, MethodSpec] = {
    "ft": MethodSpec(
        name="ft", loss_u="neg_ce", loss_c="ce", alpha=0.0, beta=1.0, batching="retain",
        lr=0.5,  # smoke: UA stays 0 for any lr <= 2 (FT forgets only by drift); SalUn 0.01-0.1 +mom
        epoch_over="retain", uses=(),
        description="fine-tuning on the retain set (L_U only shapes masks)",
    ),
    "ga": MethodSpec(
        name="ga", loss_u="neg_ce", loss_c="ce", alpha=1.0, beta=0.0, batching="forget",
        lr=0.7,  # smoke: UA 0 -> 3.3 (0.5: no change, 1.0: collapse); SalUn 1e-5..1e-3 +mom
        epoch_over="forget", uses=(),
        description="gradient ascent on the forget set (L_C only shapes masks)",
    ),
    "ngplus": MethodSpec(
        name="ngplus", loss_u="neg_ce", loss_c="ce", alpha=0.05, beta=0.95, batching="paired",
        lr=0.5,  # small CNN: UA moved from ~0.5. Smoke: 2.0 no change, 2.5 collapse
        epoch_over="retain", uses=("ngplus_a",),
        description="NegGrad+, this project's form: (1 - a) * (-CE on D_f) + a * CE on D_r, "
                    "an epoch over D_r with D_f cycled alongside (SCRUB's batching, without its "
                    "proximal term and eval-mode BatchNorm)",
    ),
    "ngplus_authors": MethodSpec(
        name="ngplus_authors", loss_u="neg_ce", loss_c="ce", alpha=0.05, beta=0.95,
        batching="paired", partner="epoch",
        lr=0.5,  # as ngplus; smoke (one step per epoch): no change up to 4.0. Authors: Adam 1e-4
        epoch_over="forget", uses=("ngplus_a",),
        description="NegGrad+ as the authors code it: (1 - a) * (-CE) on a D_f batch plus a * CE "
                    "on a D_r batch, an epoch over D_f with a fresh shuffled D_r stream each "
                    "epoch, BatchNorm in train mode (unlearn/NGPlus.py)",
    ),
    "rl": MethodSpec(
        name="rl", loss_u="random_label_ce", loss_c="ce", alpha=1.0, beta=1.0,
        batching="sequential",
        lr=0.3,  # smoke: UA 0 -> 1.7 (0.1: 0.8); SalUn 0.01-0.1 with momentum 0.9
        epoch_over="both", uses=(),
        description="random labels: a forget pass with uniform labels, then a retain pass (SalUn)",
    ),
    "srl": MethodSpec(
        name="srl", loss_u="shifted_label_ce", loss_c="ce", alpha=1.0, beta=1.0,
        batching="paired",
        lr=0.03,  # small CNN: ~0.03; smoke: UA 0 -> 7.4 (0.01: 5.8)
        epoch_over="retain", uses=(),
        description="successive random labels, this project's form: labels never the true one, "
                    "equal-size D_f and D_r batches at weights 1 and 1, an epoch over D_r with "
                    "D_f cycled alongside",
    ),
    "srl_authors": MethodSpec(
        name="srl_authors", loss_u="shifted_label_ce", loss_c="ce", alpha=0.05, beta=0.95,
        batching="paired", partner="epoch",
        lr=1.0,  # smoke (one step per epoch): UA 0, MIA 0 -> 6.6 (0.3: 0.8). Authors: Adam 1e-4
        epoch_over="forget", uses=(),
        description="SRL as the authors code it: 0.05 * CE on a D_f batch with labels "
                    "(y + U{1..C-1}) mod C plus 0.95 * CE on a D_r batch, an epoch over D_f "
                    "with a fresh shuffled D_r stream each epoch (unlearn/SRL.py)",
    ),
    "srl_deepunlearn": MethodSpec(
        name="srl_deepunlearn", loss_u="random_label_ce", loss_c="ce", alpha=1.0, beta=1.0,
        batching="mixed",
        lr=0.03,  # smoke: UA stays 0, MIA 0 -> 3.3 (0.1: UA 0.8, MIA 24.8; 0.3: UA 2.5)
        epoch_over="both", uses=(),
        description="SRL as DeepUnlearn codes it: D_f with uniform random labels (the true one "
                    "possible) concatenated with D_r and shuffled, one CE per mixed batch, an "
                    "epoch over both (successive_random_labels.py)",
    ),
    "l1_sparse": MethodSpec(
        name="l1_sparse", loss_u="neg_ce", loss_c="ce", alpha=0.0, beta=1.0, batching="retain",
        lr=0.5,  # as FT; smoke: UA stays 0 (1.0: MIA moves, 2.0 diverges); SalUn 0.005-0.1 +mom
        epoch_over="retain", uses=("l1_gamma",), penalty="l1",
        description="fine-tuning with an l1 penalty whose weight decays linearly to 0",
    ),
    "eupmu": MethodSpec(
        name="eupmu", loss_u="random_label_ce", loss_c="ce", alpha=1.0, beta=1.0,
        batching="mixed", lr=LR_EUPMU, epoch_over="both", rule="eupmu",
        uses=("eupmu_eps", "eupmu_max_norm"),
        description="EUPMU's explicit unilateral gradient surgery (UNGrad): on a mixed batch, "
                    "g_f + lambda* g_r with lambda* = max(0, (-<g_r, g_f> - eps) / |g_r|^2), "
                    "L_f the random-label CE, two backward passes, the direction clipped to "
                    "norm 1 (ImplicitGradientSurgery in weighted_methods/weight_methods.py)",
    ),
    "eupmu_implicit": MethodSpec(
        name="eupmu_implicit", loss_u="random_label_ce", loss_c="ce", alpha=1.0, beta=1.0,
        batching="mixed", lr=LR_EUPMU_IMPLICIT, epoch_over="both", rule="eupmu_implicit",
        addons=("none", "salun", "salun_step"),
        uses=("eupmu_w_lr", "eupmu_error", "eupmu_w_init", "eupmu_w_decay"),
        description="EUPMU's implicit form: one backward pass of w log L_r + log L_f on a "
                    "mixed batch (L_f the random-label CE), w updated after each step by Adam "
                    "from the observed change of log L_r (class EU in "
                    "weighted_methods/weight_methods.py, unlearn/RL.py)",
    ),
    "minnorm_og": MethodSpec(
        name="minnorm_og", loss_u="neg_ce", loss_c="ce", alpha=0.0, beta=1.0,
        batching="paired", lr=LR_MINNORM, epoch_over="forget", rule="minnorm_og",
        addons=("none",),
        uses=("minnorm_reg", "minnorm_decay", "minnorm_samples", "minnorm_every",
              "minnorm_gd_epochs"),
        description="MinNorm-OG: before each retain-loss step, theta -= c * P_perp theta, "
                    "P_perp the projection orthogonal to the max-logit gradients of a "
                    "class-balanced sample of the retain batch, c decaying geometrically; an "
                    "epoch over D_f with D_r batches alongside (MinNormOGUnlearner in "
                    "common/unlearners/unlearners.py of jacob-block/overparameterized-unlearning)",
    ),
}
# SalUn is not a base method here: it is an add-on that combines with any base method. SalUn's
# own is "rl" + "salun" (a static global mask at theta0); the authors' SalUn baseline is
# "srl_authors" + "salun_step" (a per-tensor mask recomputed on every forget batch).

#: The :class:`feasible.unlearn.UnlearnConfig` fields each add-on reads beyond the common ones
#: (method, agg, alpha, beta, renorm, lr, epochs, batch size, optimiser, seed), a view of the
#: ``uses`` of each record of :data:`feasible.masks.ADDONS`, where add-ons are declared.
ADDON_USES: dict[str, tuple[str, ...]] = {name: addon.uses for name, addon in ADDONS.items()}


def method_weights(spec: MethodSpec, *, ngplus_a: float = 0.95) -> tuple[float, float]:
    """The default weights ``(alpha, beta)`` of a method.

    NGPlus reads them from its mixing parameter: ``alpha = 1 - a``, ``beta = a`` (SCRUB's NegGrad+,
    ``a = 0.95`` by default); every other method uses its record's values.

    References:
        Kurmanji et al., SCRUB (NeurIPS 2023), NegGrad+; the authors' ``--beta``
        (``arg_parser.py`` of owl1996/UnlearningFocusVector, 0.95 in their sweeps).

    Args:
        spec: the method.
        ngplus_a: NGPlus's ``a`` in [0, 1]; ignored by methods that do not use it.

    Returns:
        ``(alpha, beta)``.
    """
    if "ngplus_a" in spec.uses:
        return 1.0 - ngplus_a, ngplus_a
    return spec.alpha, spec.beta


def passes(spec: MethodSpec) -> tuple[Pass, ...]:
    """The passes one epoch of a method makes, in order.

    Args:
        spec: the method.

    Returns:
        Two passes for the sequential batching (forget with ``beta`` off, then retain with
        ``alpha`` off), one pass over the union for the mixed batching, else one pass over
        ``spec.epoch_over`` with both weights on.
    """
    if spec.batching == "sequential":
        return (Pass("forget", 1.0, 0.0), Pass("retain", 0.0, 1.0))
    if spec.batching == "mixed":
        return (Pass("union", 1.0, 1.0),)
    return (Pass(spec.epoch_over, 1.0, 1.0),)


# --- the related methods' math (EUPMU, MinNorm-OG) ----------------------------------------------

#: The constant EUPMU's code adds to ``||g_r||^2`` and to each loss before its log (``EPS`` in
#: ``weighted_methods/weight_methods.py``).
EUPMU_EPS: float = 1e-8


def eupmu_lambda(dot_rf: float, sq_norm_r: float, eps: float = 0.0) -> float:
    """EUPMU's multiplier ``lambda* = max(0, (-<g_r, g_f> - eps) / (||g_r||^2 + 1e-8))``.

    The direction ``d = g_f + lambda* g_r`` (descend: ``theta - lr * d``) solves
    ``min ||d - g_f||^2`` subject to ``<g_r, d> >= -eps``: where the two gradients conflict
    (``<g_r, g_f> < -eps``) a step along ``-d`` raises the retain loss ``L_r`` at the first-order
    rate ``eps`` exactly (``<g_r, d> = -eps``), and ``g_f`` is left as it is otherwise. Only the
    forget gradient is changed ("unilateral" surgery).

    References:
        Zhou et al., "Efficient Utility-Preserving Machine Unlearning with Implicit Gradient
        Surgery" (NeurIPS 2025, arXiv 2510.22124), Proposition 3.2 as its code names it;
        ``ImplicitGradientSurgery.get_weighted_loss`` in
        ``classification/classification_EU_RL/weighted_methods/weight_methods.py`` of
        anseryuer/EUPMU-Efficient-Utility-Preserving-Machine-Unlearning (``epsilon`` 0 by
        default, ``lambda*`` applied only when > 0).

    Args:
        dot_rf: ``<g_r, g_f>``.
        sq_norm_r: ``||g_r||^2`` (>= 0).
        eps: the allowed first-order rate of increase of ``L_r``.

    Returns:
        ``lambda* >= 0``.
    """
    value = (-dot_rf - eps) / (sq_norm_r + EUPMU_EPS)
    return value if value > 0 else 0.0


class AdamScalar(NamedTuple):
    """The state of :func:`eupmu_w_step`: Adam's two moments of ``w`` and its step count."""

    m: float = 0.0
    v: float = 0.0
    t: int = 0


def eupmu_w_step(w: float, delta: float, state: AdamScalar, *, lr: float = 1.0,
                 weight_decay: float = 0.01, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> tuple[float, AdamScalar]:
    """One update of EUPMU's weight ``w``: an Adam step with ``delta`` as its gradient.

    ``delta = log L_r(before) - log L_r(after) - error`` on the same batch around the model's
    step: when the retain loss rises by more than ``error`` (in log), ``delta < 0`` and ``w``
    grows, so the next steps weigh the retain loss more (``w`` acts as the Lagrange multiplier
    of the constraint on ``L_r``). ``torch.optim.Adam``'s rule with coupled weight decay:
    ``g = delta + wd * w``, ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g^2``,
    ``w -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)``.

    References:
        ``EU.update`` in ``weighted_methods/weight_methods.py`` of
        anseryuer/EUPMU-Efficient-Utility-Preserving-Machine-Unlearning (``Adam([w],
        lr=w_lr, weight_decay=gamma)``, ``gamma = 0.01``).

    Args:
        w: the current weight.
        delta: the gradient given to Adam.
        state: the previous state (``AdamScalar()`` at first).
        lr: Adam's learning rate (their ``eu_w_lr``), > 0.
        weight_decay: coupled weight decay (their ``gamma``), >= 0.
        betas: Adam's ``(b1, b2)``.
        eps: Adam's ``eps``.

    Returns:
        The new ``w`` and state.
    """
    b1, b2 = betas
    g = delta + weight_decay * w
    m = b1 * state.m + (1 - b1) * g
    v = b2 * state.v + (1 - b2) * g * g
    t = state.t + 1
    step = lr * (m / (1 - b1 ** t)) / (math.sqrt(v / (1 - b2 ** t)) + eps)
    return w - step, AdamScalar(m, v, t)


def orthogonal_part(theta: Tensor, vectors: Tensor) -> Tensor:
    """``P_perp theta``: the part of ``theta`` orthogonal to the span of the columns of ``vectors``.

    ``P_perp theta = theta - Q Q^T theta`` with ``Q`` the reduced QR basis of ``vectors``
    (``d x n``), computed in float64. With ``n < d`` independent columns (the setting: a few
    samples, many parameters) this is the orthogonal projection. With dependent columns the
    reduced ``Q`` still has ``n`` orthonormal columns, so a space larger than the span is
    removed, as in the authors' code, which uses the same QR.

    References:
        ``proj(x, A, perp=True)`` in ``common/utils/misc_utils.py`` of
        jacob-block/overparameterized-unlearning; Block, Mokhtari, Shakkottai, "Machine
        Unlearning under Overparameterization" (NeurIPS 2025, arXiv 2505.22601), Alg. 1.

    Args:
        theta: a vector of length ``d``.
        vectors: a ``d x n`` matrix.

    Returns:
        ``P_perp theta``, in ``theta``'s dtype.

    Raises:
        ValueError: the shapes do not match.
    """
    if theta.dim() != 1 or vectors.dim() != 2 or vectors.shape[0] != theta.shape[0]:
        raise ValueError(f"orthogonal_part needs a vector of length d and a d x n matrix. Got "
                         f"shapes {tuple(theta.shape)} and {tuple(vectors.shape)} instead.")
    q, _ = torch.linalg.qr(vectors.to(torch.float64), mode="reduced")
    x = theta.to(torch.float64)
    return (x - q @ (q.T @ x)).to(theta.dtype)


def class_balanced_indices(targets: Tensor, size: int, generator: torch.Generator) -> Tensor:
    """MinNorm-OG's sample of a retain batch: ``size // C`` random indices of each of its classes.

    ``C`` is the number of classes present in ``targets``; a class with fewer samples gives
    all of them. With ``size < C``, one index per class (this project's choice; the authors'
    code would take none).

    References:
        ``MinNormOGUnlearner.get_output_grads`` in ``common/unlearners/unlearners.py`` of
        jacob-block/overparameterized-unlearning (``grad_sample_size`` 50).

    Args:
        targets: the batch's labels.
        size: the sample size asked for, >= 1.
        generator: the random stream.

    Returns:
        Indices into ``targets``, sorted by class.
    """
    labels = targets.cpu()
    classes = torch.unique(labels)
    per_class = max(1, size // len(classes))
    out = []
    for c in classes:
        idx = torch.nonzero(labels == c).flatten()
        order = torch.randperm(len(idx), generator=generator, device=generator.device)
        out.append(idx[order.cpu()[:per_class]])
    return torch.cat(out).to(targets.device)


def minnorm_coefficient(reg: float, decay: float, k: int) -> float:
    """The coefficient of MinNorm-OG's ``k``-th projection (0-based): ``reg * decay**k``.

    References:
        ``MinNormOGUnlearner.pre_loss_update`` (``reg_coef *= reg_coef_decay`` after each
        projection) of jacob-block/overparameterized-unlearning.
    """
    return reg * decay ** k
