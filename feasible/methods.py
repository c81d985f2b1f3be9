"""The base unlearning methods as data: losses, weights and batching."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from feasible._validate import names
from feasible.masks import ADDONS

__all__ = [
    "ADDON_USES",
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
    "l1_weight",
    "method_weights",
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
