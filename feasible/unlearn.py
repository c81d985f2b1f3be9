"""The one unlearning loop of Algorithm 1: estimate, aggregate, mask, step."""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from feasible._validate import is_int, is_real, names
from feasible import data
from feasible.masks import (
    ADDONS,
    AGGREGATORS,
    DEFAULT_FOCUS_VARIANT,
    FOCUS_VARIANTS,
    aggregate_unchecked,
    compute_update,
    saliency_mask,
)
from feasible.methods import (
    EUPMU_EPS,
    LOSSES,
    METHODS,
    PENALTIES,
    AdamScalar,
    MethodSpec,
    Pass,
    class_balanced_indices,
    eupmu_lambda,
    eupmu_w_step,
    l1_weight,
    method_weights,
    minnorm_coefficient,
    orthogonal_part,
    passes,
)
from feasible.noise import EMA_EPS, EMA_RHO, NOISE_MODELS, ema_step, grad_stats

__all__ = [
    "MASK_MODES",
    "NOISE_METHODS",
    "OPTIMIZERS",
    "PROTOCOLS",
    "AdamState",
    "MomentumState",
    "UnlearnConfig",
    "UnlearnResult",
    "masked_adam_step",
    "eupmu_weights",
    "masked_sgd_step",
    "minnorm_project",
    "output_gradients",
    "relevant_fields",
    "saliency_at",
    "unlearn",
]

Batch = tuple[Tensor, Tensor]
Tree = dict[str, Tensor]

#: The names of the gradient-noise models of :data:`feasible.noise.NOISE_MODELS`, i.e.
#: ``"microbatch"`` and ``"per_sample"`` (:func:`feasible.noise.grad_stats`) and ``"ema"`` (the
#: authors' running second moment, :func:`feasible.noise.ema_scale`, one state per loss carried
#: across steps and epochs).
NOISE_METHODS: tuple[str, ...] = tuple(NOISE_MODELS)

#: The optimisers of the loop, ``"sgd"`` (:func:`masked_sgd_step`, ``torch.optim.SGD``'s rule)
#: and ``"adam"`` (:func:`masked_adam_step`, ``torch.optim.Adam``'s rule with betas (0.9, 0.999)
#: and eps 1e-8, PyTorch's defaults, which the authors' code keeps).
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")

#: How a mask meets the optimiser. ``"hard"`` (this project's): a masked coordinate does not move
#: in that step, whatever momentum, Adam's moments or weight decay would do, and the optimiser's
#: state for it (momentum buffer; Adam's two moments and its step count) is held. ``"leaky"``
#: (the authors' and SalUn's code): only its gradient is zeroed before the optimiser's step, so
#: momentum, Adam's moments and weight decay keep moving it.
MASK_MODES: tuple[str, ...] = ("hard", "leaky")

#: The protocols by name, presets of the fields a run's protocol decides. A field left ``None``
#: in :class:`UnlearnConfig` takes its protocol's value; a field given explicitly wins.
#:
#: - ``"harness"`` (the default; the literature harness as this project runs it, SalUn-style):
#:   plain SGD at each method's default rate, hard masks, micro-batch standard errors, 5 epochs
#:   of batch 128, PROB at the paper's example threshold p = 0.45 (Fig. 4).
#: - ``"authors"`` (``unlearn/impl.py``, ``arg_parser.py`` and ``array_param_file.py`` of
#:   owl1996/UnlearningFocusVector): Adam at 1e-4, leaky masks, the ``ema`` noise model, 30
#:   epochs of batch 256, PROB at p = 0.3 (their sweep's other value, 0.5, is the AND mask). Run
#:   their methods as ``ngplus_authors`` and ``srl_authors`` (beta = 0.95 is those methods'
#:   default) and their SalUn baseline as ``srl_authors`` with the add-on ``salun_step``; the
#:   protocol does not rename methods or add-ons.
PROTOCOLS: dict[str, dict[str, Any]] = {
    "harness": {"optimizer": "sgd", "lr": None, "mask_mode": "hard", "noise": "microbatch",
                "epochs": 5, "batch_size": 128, "p": 0.45},
    "authors": {"optimizer": "adam", "lr": 1e-4, "mask_mode": "leaky", "noise": "ema",
                "epochs": 30, "batch_size": 256, "p": 0.3},
}


@dataclass(frozen=True)
class UnlearnConfig:
    """Every setting of one unlearning run, validated when built.

    ``protocol`` names a preset (:data:`PROTOCOLS`): every field it sets that is left ``None``
    here takes the preset's value when the configuration is built, so the object holds the
    resolved values; explicit values win. (``dataclasses.replace`` passes every resolved value
    explicitly, so to change the protocol of a configuration build a new one.)

    Attributes:
        method: a base method, a key of :data:`feasible.methods.METHODS`.
        addon: an add-on, a key of :data:`feasible.masks.ADDONS`.
        agg: the aggregator, ``"lin"`` (linG) or ``"min"`` (MinG) (Figs. 1-2).
        alpha: the weight on ``g_U``; ``None`` takes the method's.
        beta: the weight on ``g_C``; ``None`` takes the method's.
        p: the PROB threshold in (0, 1); ``None``: the protocol's (0.45, the paper's example in
            Fig. 4, or the authors' 0.3).
        focus_variant: a key of :data:`feasible.masks.FOCUS_VARIANTS`: ``"probability"``
            (the authors' ``f = P``, ``u = f * a``), or this project's ``"signed"`` or ``"soft"``.
        renorm: rescale each masked direction to the norm of the unmasked aggregate (this
            project's option).
        lr: the learning rate; ``None``: the protocol's (the authors' 1e-4), or for the harness
            the method's default for plain SGD.
        epochs: the number of epochs, >= 1; ``None``: the protocol's.
        batch_size: samples per batch of each set, >= 2; ``None``: the protocol's.
        momentum: SGD momentum in [0, 1); 0 is plain SGD (SalUn's harness uses 0.9); must be 0
            for Adam.
        weight_decay: L2 weight decay >= 0, added to the direction (coupled, as in
            ``torch.optim.SGD`` and ``torch.optim.Adam``).
        noise: the noise model, a key of :data:`feasible.noise.NOISE_MODELS`; read only by the
            add-ons that need standard errors (``prob``, ``focus``, ``focus_opt``); ``None``: the
            protocol's.
        k: micro-batches per batch for ``noise="microbatch"``, >= 2 (and <= batch_size where
            an add-on reads it).
        saliency_fraction: the share of coordinates SalUn's mask keeps, in (0, 1]; 0.5 is
            SalUn's default saliency sparsity and the authors' default ``quantile``.
        ngplus_a: NGPlus's mix in [0, 1]: ``alpha = 1 - a``, ``beta = a`` (SCRUB's and the
            authors' 0.95).
        l1_gamma: the l1-sparse penalty's initial weight >= 0, decayed linearly per epoch.
            5e-4 is this project's default (SalUn's search range is recalled as [5e-5, 1e-4],
            unverified).
        seed: seeds batch order, augmentation and random labels, >= 0.
        protocol: a key of :data:`PROTOCOLS`; the record names it.
        optimizer: a key of :data:`OPTIMIZERS`; ``None``: the protocol's.
        mask_mode: a key of :data:`MASK_MODES`; ``None``: the protocol's.
        eupmu_eps: ``eupmu``'s allowed first-order rise rate ``eps`` of the retain loss in
            ``lambda*`` (:func:`feasible.methods.eupmu_lambda`), a finite float; 0 is the
            authors' default (``ImplicitGradientSurgery(epsilon=0.0)``).
        eupmu_max_norm: ``eupmu``'s clip of the direction's global L2 norm, > 0, or 0 for no
            clip; 1 is the authors' (``max_norm=1.0``, applied before the SalUn mask, as here:
            the clip scales the unmasked direction).
        eupmu_w_lr: ``eupmu_implicit``'s Adam rate for ``w``, > 0; 1 is the authors' for
            random 10 % (their scripts' ``--eu_w_lr 1``; the argparse default is 3).
        eupmu_error: ``eupmu_implicit``'s ``error``, the tolerated drop of ``log L_r`` per step
            subtracted from ``delta``, a finite float; 0.01 is the authors' for random 10 %
            (``--eu_error 0.01``; class-wise 0.05, the argparse default 0.03).
        eupmu_w_init: ``eupmu_implicit``'s initial ``w``, a finite float (a negative ``w``
            weighs ``L_r`` 0); 0 is the authors' (``--weight_init``).
        eupmu_w_decay: ``eupmu_implicit``'s Adam weight decay on ``w``, >= 0; the authors'
            ``gamma = 0.01`` (class ``EU``).
        minnorm_reg: ``minnorm_og``'s first projection coefficient ``c`` in [0, 1] (the
            authors' ``reg_coef``, ``1 / (1 + lambda)``; their grids take 0.001 to 0.1 on
            images, 0.1 to 1 on the regression); 0.1 here.
        minnorm_decay: its geometric decay per projection in [0, 1] (``reg_coef_decay``; their
            grids 0.2 to 0.9); 0.8 here.
        minnorm_samples: retain samples per projection, >= 1 (``grad_sample_size``, 50 in every
            grid of theirs).
        minnorm_every: project in every ``minnorm_every``-th epoch, >= 1 (``proj_pd``, 1).
        minnorm_gd_epochs: the last epochs without projection, >= 0 (``num_gd_epochs``, 0 in
            their image grids).
    """

    method: str
    addon: str = "none"
    agg: str = "lin"
    alpha: float | None = None
    beta: float | None = None
    p: float | None = None
    focus_variant: str = DEFAULT_FOCUS_VARIANT
    renorm: bool = False
    lr: float | None = None
    epochs: int | None = None
    batch_size: int | None = None
    momentum: float = 0.0
    weight_decay: float = 0.0
    noise: str | None = None
    k: int = 8
    saliency_fraction: float = 0.5
    ngplus_a: float = 0.95
    l1_gamma: float = 5e-4
    seed: int = 0
    protocol: str = "harness"
    optimizer: str | None = None
    mask_mode: str | None = None
    eupmu_eps: float = 0.0
    eupmu_max_norm: float = 1.0
    eupmu_w_lr: float = 1.0
    eupmu_error: float = 0.01
    eupmu_w_init: float = 0.0
    eupmu_w_decay: float = 0.01
    minnorm_reg: float = 0.1
    minnorm_decay: float = 0.8
    minnorm_samples: int = 50
    minnorm_every: int = 1
    minnorm_gd_epochs: int = 0

    def __post_init__(self) -> None:
        owner = type(self).__name__  # a subclass (feasible.experiment.Config) names itself

        def bad(name: str, allowed: str) -> ValueError:
            return ValueError(
                f"The '{name}' field of {owner} must be {allowed}. "
                f"Got {getattr(self, name)!r} instead."
            )

        if self.protocol not in PROTOCOLS:
            raise ValueError(f"Unknown protocol {self.protocol!r}; expected one of "
                             f"{names(PROTOCOLS)}.")
        for name, value in PROTOCOLS[self.protocol].items():  # resolve once, here
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        for name, options, what in (("method", METHODS, "method"), ("addon", ADDONS, "add-on"),
                                    ("agg", AGGREGATORS, "aggregator"),
                                    ("focus_variant", FOCUS_VARIANTS, "focus variant"),
                                    ("noise", NOISE_METHODS, "noise estimator"),
                                    ("optimizer", OPTIMIZERS, "optimizer"),
                                    ("mask_mode", MASK_MODES, "mask mode")):
            if getattr(self, name) not in options:
                raise ValueError(f"Unknown {what} {getattr(self, name)!r}; "
                                 f"expected one of {names(options)}.")
        for name in ("alpha", "beta"):
            value = getattr(self, name)
            if value is not None and not (is_real(value) and value >= 0):
                raise bad(name, "None or a finite float >= 0")
        if not (is_real(self.p) and 0 < self.p < 1):
            raise bad("p", "a float in the open interval (0, 1)")
        if not isinstance(self.renorm, bool):
            raise bad("renorm", "a bool")
        if self.lr is not None and not (is_real(self.lr) and self.lr > 0):
            raise bad("lr", "None or a finite float > 0")
        if not (is_int(self.epochs) and self.epochs >= 1):
            raise bad("epochs", "an int >= 1")
        if not (is_int(self.batch_size) and self.batch_size >= 2):
            raise bad("batch_size", "an int >= 2")
        if not (is_real(self.momentum) and 0 <= self.momentum < 1):
            raise bad("momentum", "a float in the interval [0, 1)")
        if self.optimizer == "adam" and self.momentum != 0:
            raise bad("momentum", "0 with optimizer 'adam' (Adam's betas are fixed at "
                                  "(0.9, 0.999))")
        if not (is_real(self.weight_decay) and self.weight_decay >= 0):
            raise bad("weight_decay", "a finite float >= 0")
        if not (is_int(self.k) and self.k >= 2):
            raise bad("k", "an int >= 2")
        reads_k = ADDONS[self.addon].needs_se and self.noise == "microbatch"
        if reads_k and self.k > self.batch_size:
            raise bad("k", f"an int in the range [2, batch_size={self.batch_size}] for "
                           f"micro-batch standard errors")
        if not (is_real(self.saliency_fraction) and 0 < self.saliency_fraction <= 1):
            raise bad("saliency_fraction", "a float in the interval (0, 1]")
        if not (is_real(self.ngplus_a) and 0 <= self.ngplus_a <= 1):
            raise bad("ngplus_a", "a float in the interval [0, 1]")
        if not (is_real(self.l1_gamma) and self.l1_gamma >= 0):
            raise bad("l1_gamma", "a finite float >= 0")
        if not (is_int(self.seed) and self.seed >= 0):
            raise bad("seed", "an int >= 0")
        for name in ("eupmu_eps", "eupmu_error", "eupmu_w_init"):
            if not is_real(getattr(self, name)):
                raise bad(name, "a finite float")
        if not (is_real(self.eupmu_max_norm) and self.eupmu_max_norm >= 0):
            raise bad("eupmu_max_norm", "a finite float >= 0 (0: no clip)")
        if not (is_real(self.eupmu_w_lr) and self.eupmu_w_lr > 0):
            raise bad("eupmu_w_lr", "a finite float > 0")
        if not (is_real(self.eupmu_w_decay) and self.eupmu_w_decay >= 0):
            raise bad("eupmu_w_decay", "a finite float >= 0")
        for name in ("minnorm_reg", "minnorm_decay"):
            if not (is_real(getattr(self, name)) and 0 <= getattr(self, name) <= 1):
                raise bad(name, "a float in the interval [0, 1]")
        for name, low in (("minnorm_samples", 1), ("minnorm_every", 1), ("minnorm_gd_epochs", 0)):
            if not (is_int(getattr(self, name)) and getattr(self, name) >= low):
                raise bad(name, f"an int >= {low}")
        allowed = self.spec.addons
        if allowed is not None and self.addon not in allowed:
            raise ValueError(
                f"The add-on {self.addon!r} does not combine with method {self.method!r}; "
                f"it allows {names(allowed)}.")
        if self.spec.rule != "linear" and self.agg != "lin":
            raise bad("agg", f"'lin' for method {self.method!r} (its rule fixes the weights)")
        alpha, beta = self.weights
        if alpha == 0 and beta == 0:
            raise ValueError(
                f"The weights of {owner} are both 0 for method {self.method!r} "
                f"(alpha={self.alpha!r}, beta={self.beta!r}): every update would be zero. "
                "Give alpha or beta a value > 0."
            )

    @property
    def spec(self) -> MethodSpec:
        """The base method's record."""
        return METHODS[self.method]

    @property
    def weights(self) -> tuple[float, float]:
        """The ``(alpha, beta)`` in force: the config's where given, else the method's."""
        alpha, beta = method_weights(self.spec, ngplus_a=self.ngplus_a)
        return (float(alpha if self.alpha is None else self.alpha),
                float(beta if self.beta is None else self.beta))

    @property
    def learning_rate(self) -> float:
        """The learning rate in force (the config's where given, else the method's default)."""
        return float(self.spec.lr if self.lr is None else self.lr)


def relevant_fields(cfg: UnlearnConfig) -> dict[str, Any]:
    """The fields of a configuration that can change its result.

    Drops the fields that only other methods or other add-ons read (e.g. ``p`` for
    ``addon="none"``, ``ngplus_a`` for methods other than NGPlus), so that a hash of this dict
    ignores them. ``alpha``, ``beta`` and ``lr`` are given as the values in force. The protocol's
    name is dropped (its resolved values are what count), and so are the optimiser and the mask
    mode at the values that reproduce the harness's behaviour (``"sgd"``; ``"hard"``, or any
    mode for ``addon="none"``, which masks nothing), so that the configurations of records
    computed before these fields existed keep their hashes.

    Args:
        cfg: the configuration.

    Returns:
        Field name to value, JSON-serialisable.
    """
    method_only = {name for spec in METHODS.values() for name in spec.uses}
    addon_only = {name for addon in ADDONS.values() for name in addon.uses}
    used = set(cfg.spec.uses) | set(ADDONS[cfg.addon].uses)
    if "focus_variant" in used and not FOCUS_VARIANTS[cfg.focus_variant].uses_p:
        used.discard("p")
    if cfg.noise != "microbatch":
        used.discard("k")
    unread = {"protocol"}
    if cfg.optimizer == "sgd":
        unread.add("optimizer")
    if cfg.mask_mode == "hard" or cfg.addon == "none":
        unread.add("mask_mode")
    out = {name: value for name, value in asdict(cfg).items()
           if name not in ((method_only | addon_only) - used) | unread}
    out["alpha"], out["beta"] = cfg.weights
    out["lr"] = cfg.learning_rate
    return out


@dataclass(frozen=True)
class UnlearnResult:
    """What an unlearning run returns.

    Attributes:
        epochs: one record per finished (or diverged) epoch, see :func:`unlearn`.
        diverged_epoch: the 1-based epoch in which a loss, gradient or parameter became NaN or
            infinite, or ``None``.
        wall_time: seconds spent unlearning (the saliency mask included, ``on_epoch`` excluded).
        setup_time: of ``wall_time``, seconds spent before the first step (SalUn's mask).
        cpu_time: the same span in CPU seconds of this process, all its threads (the cost of
            unlearning on a CPU: unlike ``wall_time``, it does not grow when other processes
            share the cores).
    """

    epochs: list[dict[str, Any]]
    diverged_epoch: int | None
    wall_time: float
    setup_time: float = 0.0
    cpu_time: float = 0.0


# --- the optimisers ----------------------------------------------------------------------------

class MomentumState(NamedTuple):
    """The momentum buffers of :func:`masked_sgd_step` (``None`` before the first step)."""

    buffers: Tree | None


@torch.no_grad()
def masked_sgd_step(
    params: dict[str, nn.Parameter],
    direction: Tree,
    keep: Tree,
    state: MomentumState,
    *,
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    leaky: bool = False,
) -> tuple[Tree, MomentumState]:
    """One SGD step in which masked coordinates do not move (or, ``leaky``, may).

    ``torch.optim.SGD``'s rule (dampening 0, no Nesterov): ``d = u + wd * theta``,
    ``b = momentum * b + d``, ``theta -= lr * b``. With ``leaky=False`` (hard masks) this holds
    on kept coordinates only; on masked ones nothing happens: the parameter and its momentum
    buffer keep their values, so neither momentum nor weight decay leaks through the mask.
    With ``leaky=True`` every coordinate follows the rule with ``u`` as given (zero where an
    add-on masked it), as when a mask zeroes ``param.grad`` before ``torch.optim.SGD``'s step:
    SalUn's code, whose leak its authors fixed upstream only in 2026 by restoring the weights
    after the step. Without momentum and weight decay the two modes take the same step.

    References:
        SalUn's ``Classification/unlearn/RL.py`` (OPTML-Group/Unlearn-Saliency) for the leaky
        form; a mask applies to the parameter change actually made is this project's reading.

    Args:
        params: the parameters to update in place, name to tensor.
        direction: the update direction ``u`` per parameter.
        keep: bool per parameter, True where the coordinate may move.
        state: the momentum buffers from the previous step (``MomentumState(None)`` at first).
        lr: the learning rate, > 0.
        momentum: in [0, 1).
        weight_decay: >= 0.
        leaky: zero only the gradient of masked coordinates instead of freezing them.

    Returns:
        The step actually taken per parameter (``theta_new = theta_old - step``) and the new
        momentum state.
    """
    steps: Tree = {}
    buffers: Tree | None = {} if momentum else None
    for name, theta in params.items():
        d = direction[name]
        if weight_decay:
            d = d + weight_decay * theta
        if momentum:
            old = state.buffers[name] if state.buffers is not None else torch.zeros_like(theta)
            new = momentum * old + d
            buffers[name] = new if leaky else torch.where(keep[name], new, old)
            d = buffers[name]
        step = lr * d if leaky else torch.where(keep[name], lr * d, torch.zeros_like(d))
        theta.sub_(step)
        steps[name] = step
    return steps, MomentumState(buffers)


class AdamState(NamedTuple):
    """The state of :func:`masked_adam_step` (all ``None`` before the first step).

    Per coordinate: Adam's first and second moments and the number of steps it has taken (the
    bias corrections use it), so that a coordinate frozen by a hard mask resumes where it
    stopped.
    """

    exp_avg: Tree | None
    exp_avg_sq: Tree | None
    steps: Tree | None


@torch.no_grad()
def masked_adam_step(
    params: dict[str, nn.Parameter],
    direction: Tree,
    keep: Tree,
    state: AdamState,
    *,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    leaky: bool = False,
) -> tuple[Tree, AdamState]:
    """One Adam step in which masked coordinates do not move (or, ``leaky``, may).

    ``torch.optim.Adam``'s rule (no AMSGrad, coupled weight decay): ``d = u + wd * theta``,
    ``m = b1 * m + (1 - b1) * d``, ``v = b2 * v + (1 - b2) * d**2``, ``t += 1``,
    ``theta -= lr * (m / (1 - b1**t)) / (sqrt(v / (1 - b2**t)) + eps)``. With ``leaky=False``
    (hard masks) this holds on kept coordinates only; on a masked coordinate nothing happens:
    the parameter, its two moments and its step count keep their values. With ``leaky=True``
    every coordinate follows the rule with ``u`` as given (zero where an add-on masked it),
    which is ``torch.optim.Adam`` after the mask zeroed ``param.grad``, as in the authors' code:
    Adam's first moment keeps moving a masked coordinate for many steps after its gradient was
    cut.

    References:
        Kingma and Ba (2015); the authors' code: ``torch.optim.Adam`` at ``args.unlearn_lr`` in
        ``unlearn/impl.py``, with masks multiplied into ``param.grad`` in
        ``unlearn/NGradMask.py``, ``SRGradMask.py`` and ``SalUn.py`` of
        owl1996/UnlearningFocusVector.

    Args:
        params: the parameters to update in place, name to tensor.
        direction: the update direction ``u`` per parameter.
        keep: bool per parameter, True where the coordinate may move.
        state: the state from the previous step (``AdamState(None, None, None)`` at first).
        lr: the learning rate, > 0.
        betas: Adam's ``(b1, b2)``, each in [0, 1).
        eps: added to the denominator, > 0.
        weight_decay: >= 0.
        leaky: zero only the gradient of masked coordinates instead of freezing them.

    Returns:
        The step actually taken per parameter (``theta_new = theta_old - step``) and the new
        state.
    """
    b1, b2 = betas
    first = state.exp_avg is None
    exp_avg: Tree = {}
    exp_avg_sq: Tree = {}
    counts: Tree = {}
    steps: Tree = {}
    for name, theta in params.items():
        d = direction[name]
        if weight_decay:
            d = d + weight_decay * theta
        m_old = torch.zeros_like(theta) if first else state.exp_avg[name]
        v_old = torch.zeros_like(theta) if first else state.exp_avg_sq[name]
        t_old = torch.zeros_like(theta, dtype=torch.int32) if first else state.steps[name]
        m = torch.lerp(m_old, d, 1 - b1)
        v = v_old * b2 + (1 - b2) * d * d
        t = t_old + 1
        exponent = t.to(torch.float64)  # the bias corrections in double, as torch's floats
        correction1 = (1 - b1 ** exponent).to(theta.dtype)
        correction2 = (1 - b2 ** exponent).sqrt().to(theta.dtype)
        step = lr * (m / correction1) / (v.sqrt() / correction2 + eps)
        if not leaky:
            kept = keep[name]
            m, v = torch.where(kept, m, m_old), torch.where(kept, v, v_old)
            t = torch.where(kept, t, t_old)
            step = torch.where(kept, step, torch.zeros_like(step))
        theta.sub_(step)
        exp_avg[name], exp_avg_sq[name], counts[name], steps[name] = m, v, t, step
    return steps, AdamState(exp_avg, exp_avg_sq, counts)


# --- gradients ---------------------------------------------------------------------------------

class _Estimate(NamedTuple):
    mean: Tree
    se: Tree | None
    loss: float


def _estimate(model: nn.Module, params: dict[str, nn.Parameter],
              criterion: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor,
              cfg: UnlearnConfig, with_se: bool) -> _Estimate:
    """The batch-mean gradient of ``criterion`` (and its standard error when asked)."""
    if with_se:
        stats = grad_stats(model, criterion, x, y, method=cfg.noise, k=min(cfg.k, len(y)))
        return _Estimate(stats.mean, stats.se, float(stats.loss))
    loss = criterion(model(x), y)
    return _Estimate(_grads(params, loss), None, float(loss.detach()))


def _grads(params: dict[str, nn.Parameter], loss: Tensor) -> Tree:
    """The gradient of ``loss`` by parameter name, detached."""
    return {n: g.detach() for n, g in zip(params, torch.autograd.grad(loss, list(params.values())))}


def _zeros(params: dict[str, nn.Parameter]) -> Tree:
    return {n: torch.zeros_like(p, memory_format=torch.contiguous_format)
            for n, p in params.items()}


def _finite(*trees: Tree | None) -> bool:
    """True when every tensor of every tree is finite (one sum per tensor, one sync)."""
    sums = [t.sum() for tree in trees if tree is not None for t in tree.values()]
    return bool(torch.isfinite(torch.stack(sums)).all()) if sums else True


def _sq_norm(tree: Tree) -> Tensor:
    return sum((t.double() ** 2).sum() for t in tree.values())


def saliency_at(model: nn.Module, forget: Batch, *, fraction: float = 0.5,
                batch_size: int = 512) -> Tree:
    """SalUn's static saliency mask at the current parameters (theta0).

    The gradient of the gradient-ascent loss ``-CE`` summed over the whole forget set, in eval
    mode (as SalUn's ``generate_mask.py``); then the global top ``fraction`` of its magnitudes
    over all parameters (:func:`feasible.masks.saliency_mask`). This keeps the *largest*
    fraction, as the SalUn paper describes and its public ``Classification/generate_mask.py``
    does (it negates the magnitudes before sorting).

    References:
        Fan et al., SalUn (ICLR 2024), and its code (OPTML-Group/Unlearn-Saliency).

    Args:
        model: the model at theta0; its train/eval mode is restored.
        forget: the forget set ``(x, y)``.
        fraction: the share of coordinates kept, in (0, 1].
        batch_size: samples per forward pass.

    Returns:
        A bool mask per parameter.
    """
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    total = _zeros(params)
    was_training = model.training
    model.eval()
    try:
        x, y = forget
        device = next(model.parameters()).device
        for start in range(0, len(y), batch_size):
            xb = x[start:start + batch_size].to(device)
            yb = y[start:start + batch_size].to(device)
            loss = -nn.functional.cross_entropy(model(xb), yb, reduction="sum")
            for name, g in zip(params, torch.autograd.grad(loss, list(params.values()))):
                total[name] += g
    finally:
        model.train(was_training)
    return saliency_mask(total, fraction)


def _batch_saliency(model: nn.Module, params: dict[str, nn.Parameter], x: Tensor,
                    y_true: Tensor, grads: Tree | None, fraction: float) -> Tree:
    """The ``salun_step`` mask: per tensor, the top ``fraction`` of |grad(-CE)| on this batch.

    ``grads`` is that gradient when the step has it already (a method whose ``L_U`` is ``-CE``
    on the true labels); otherwise one more backward pass on ``x`` (train mode, as the
    authors' ``unlearn/SalUn.py``).
    """
    if grads is None:
        grads = _grads(params, -nn.functional.cross_entropy(model(x), y_true))
    return saliency_mask(grads, fraction, per_tensor=True)


# --- the related methods' steps (EUPMU, MinNorm-OG) -------------------------------------------

def eupmu_weights(g_u: Tree, g_c: Tree, a_w: float, b_w: float, *, eps: float = 0.0,
                  max_norm: float = 1.0) -> tuple[float, float, float]:
    """EUPMU's explicit step as the two weights of ``g_u`` and ``g_c``.

    With ``g_f = a_w g_u`` and ``g_r = b_w g_c`` (the batch shares of a mixed batch, as the
    authors weigh each part's mean loss by its share), the direction ``g_f + lambda* g_r``
    (:func:`feasible.methods.eupmu_lambda`) is ``a_w g_u + lambda* b_w g_c``; its global norm
    is then clipped to ``max_norm`` (``torch.nn.utils.clip_grad_norm_``'s factor
    ``min(1, max_norm / (norm + 1e-6))``; 0: no clip). The clip scales both weights, so that an
    add-on's mask applies to the clipped direction, as in the authors' code where the mask
    multiplies the clipped gradients.

    References:
        ``ImplicitGradientSurgery`` in ``weighted_methods/weight_methods.py`` and the ``mtl``
        branch of ``unlearn/RL.py`` of anseryuer/EUPMU-Efficient-Utility-Preserving-Machine-
        Unlearning.

    Args:
        g_u: the forget gradient (mean over the batch's forget part).
        g_c: the retain gradient.
        a_w: the weight of ``g_u`` (its share of the batch).
        b_w: the weight of ``g_c``.
        eps: EUPMU's ``epsilon``.
        max_norm: the clip, >= 0.

    Returns:
        ``(alpha, beta, lambda*)``: the weights of ``g_u`` and ``g_c`` in the step, and
        ``lambda*``.
    """
    dot = sum((g_u[n].double() * g_c[n].double()).sum() for n in g_u)
    sq_u = _sq_norm(g_u)
    sq_c = _sq_norm(g_c)
    dot, sq_u, sq_c = (float(v) for v in torch.stack([torch.as_tensor(dot), sq_u, sq_c]).cpu())
    dot_w, sq_f, sq_r = a_w * b_w * dot, a_w * a_w * sq_u, b_w * b_w * sq_c
    lam = eupmu_lambda(dot_w, sq_r, eps)
    scale = 1.0
    if max_norm > 0:
        norm = math.sqrt(max(sq_f + 2 * lam * dot_w + lam * lam * sq_r, 0.0))
        scale = min(1.0, max_norm / (norm + 1e-6))
    return scale * a_w, scale * lam * b_w, lam


@torch.no_grad()
def _set_flat(params: dict[str, nn.Parameter], flat: Tensor) -> None:
    start = 0
    for p in params.values():
        p.copy_(flat[start:start + p.numel()].view_as(p).to(p.dtype))
        start += p.numel()


def output_gradients(model: nn.Module, params: dict[str, nn.Parameter], x: Tensor) -> Tensor:
    """The gradients of each sample's output ``f(x_i)`` (the max logit), as columns ``d x n``.

    One forward pass of ``x`` in the model's current mode (the authors' code stays in train
    mode, so BatchNorm uses the sample's statistics), then one backward pass per sample.

    References:
        ``MinNormOGUnlearner.get_output_grads`` of jacob-block/overparameterized-unlearning
        ("f" of a classifier: the max logit).
    """
    out = model(x)
    scores = out.max(dim=1).values if out.dim() > 1 and out.shape[1] > 1 else out.reshape(-1)
    plist = list(params.values())
    columns = []
    for i in range(len(scores)):
        grads = torch.autograd.grad(scores[i], plist, retain_graph=i < len(scores) - 1,
                                    allow_unused=True)
        columns.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                                  for g, p in zip(grads, plist)]))
    return torch.stack(columns, dim=1)


def minnorm_project(model: nn.Module, params: dict[str, nn.Parameter], x: Tensor, y: Tensor, *,
                    coef: float, samples: int, generator: torch.Generator) -> None:
    """MinNorm-OG's projection step, in place: ``theta -= coef * P_perp theta``.

    ``P_perp`` projects onto the orthogonal complement of the span of the output gradients
    (:func:`output_gradients`) of a class-balanced sample of ``samples`` points of the retain
    batch ``(x, y)`` (:func:`feasible.methods.class_balanced_indices`), by
    :func:`feasible.methods.orthogonal_part`. To first order the step leaves those samples'
    outputs unchanged (it is orthogonal to their gradients) and shrinks the rest of ``theta``:
    the closed form of ``min ||theta + Delta||^2 + lambda ||Delta||^2`` over perturbations
    orthogonal to the span, ``Delta = -P_perp theta / (1 + lambda)``, ``coef = 1 / (1 + lambda)``.

    References:
        Block, Mokhtari, Shakkottai (NeurIPS 2025, arXiv 2505.22601), Alg. 1;
        ``MinNormOGUnlearner.pre_loss_update`` of jacob-block/overparameterized-unlearning.
    """
    idx = class_balanced_indices(y, samples, generator)
    basis = output_gradients(model, params, x[idx])
    theta = torch.cat([p.detach().reshape(-1) for p in params.values()])
    _set_flat(params, theta - coef * orthogonal_part(theta, basis))


# --- batches -----------------------------------------------------------------------------------

def _seeded(seed: int, stream: int, device: torch.device) -> torch.Generator:
    """An independent generator for one random stream of a run."""
    state = np.random.SeedSequence([seed, stream]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(state) & ((1 << 63) - 1))


def _index_batches(n: int, batch_size: int, generator: torch.Generator,
                   min_size: int) -> Iterator[Tensor]:
    """One shuffled pass of index batches; a tail batch under ``min_size`` joins the one before."""
    held = None
    for idx in data.batches(n, batch_size, generator, shuffle=True, drop_last=False):
        if held is not None and len(idx) < min_size:
            idx = torch.cat([held, idx])
        elif held is not None:
            yield held
        held = idx
    if held is not None:
        yield held


def _cycle(n: int, batch_size: int, generator: torch.Generator, min_size: int) -> Iterator[Tensor]:
    """Index batches forever: a fresh shuffled pass each time the set is used up."""
    while True:
        yield from _index_batches(n, batch_size, generator, min_size)


class _Streams:
    """The random streams of a run: one generator per (role, set, purpose), made on first use.

    Roles are "main" (the pass's own set) and "partner" (the other set, drawn alongside), so the
    main pass's batches, augmentations and labels do not depend on whether partner batches are
    drawn, that is, on the add-on.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.generators: dict[tuple[str, str, str], torch.Generator] = {}

    def __call__(self, role: str, which: str, purpose: str,
                 device: torch.device) -> torch.Generator:
        key = (role, which, purpose)
        if key not in self.generators:
            stream = int.from_bytes("/".join(key).encode(), "little") % (1 << 31)
            self.generators[key] = _seeded(self.seed, stream, device)
        return self.generators[key]


# --- per-step statistics -----------------------------------------------------------------------

def _step_stats(keep: Tree, g_u: Tree, g_c: Tree, direction: Tree, aggregate: Tree,
                step: Tree) -> dict[str, Tensor]:
    """The kept fractions and norms of one step, as 0-d tensors (no device sync)."""
    kept = sum(k.sum() for k in keep.values())
    n_all = sum(k.numel() for k in keep.values())
    active = {n: (g_u[n] != 0) | (g_c[n] != 0) for n in keep}
    n_active = sum(a.sum() for a in active.values())
    kept_active = sum((keep[n] & active[n]).sum() for n in keep)
    a_norm = _sq_norm(aggregate).sqrt()
    return {
        "kept_fraction": kept.double() / n_all,
        "kept_fraction_active": kept_active.double() / n_active.clamp(min=1),
        "active_steps": (n_active > 0).double(),
        "step_norm": _sq_norm(step).sqrt(),
        "direction_ratio": torch.where(a_norm > 0, _sq_norm(direction).sqrt()
                                       / a_norm.clamp(min=1e-300), torch.zeros_like(a_norm)),
        "ratio_steps": (a_norm > 0).double(),
        "masked": (n_all - kept).double(),
        "masked_moved": sum((~keep[n] & (step[n] != 0)).sum() for n in keep).double(),
    }


def _epoch_means(sums: dict[str, Any], steps: int) -> dict[str, float | None]:
    """Turn the summed step statistics and losses of an epoch into means."""
    def mean(total: Any, count: Any) -> float | None:
        count = float(count)
        return float(total) / count if count else None

    if not steps:
        return {k: None for k in ("kept_fraction", "kept_fraction_active", "step_norm",
                                  "direction_ratio", "masked_moved_fraction", "loss_u",
                                  "loss_c")}
    return {
        "kept_fraction": mean(sums["kept_fraction"], steps),
        "kept_fraction_active": mean(sums["kept_fraction_active"], sums["active_steps"]),
        "step_norm": mean(sums["step_norm"], steps),
        "direction_ratio": mean(sums["direction_ratio"], sums["ratio_steps"]),
        "masked_moved_fraction": mean(sums["masked_moved"], sums["masked"]),
        "loss_u": mean(sums["loss_u"], sums["loss_u_n"]),
        "loss_c": mean(sums["loss_c"], sums["loss_c_n"]),
    }


# --- the loop ----------------------------------------------------------------------------------

def unlearn(
    model: nn.Module,
    forget: Batch,
    retain: Batch,
    cfg: UnlearnConfig,
    *,
    num_classes: int,
    augment_policy: str = "none",
    on_epoch: Callable[[int, nn.Module], dict[str, Any] | None] | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> UnlearnResult:
    """Unlearn ``forget`` from ``model`` in place: the one loop of Algorithm 1.

    Each step draws batches as the method's batching says (:func:`feasible.methods.passes`),
    estimates ``(g_U, s_U)`` on the forget batch and ``(g_C, s_C)`` on the retain batch, forms
    the update with :func:`feasible.masks.feasible_update`, and takes a step of the configured
    optimiser (:func:`masked_sgd_step` or :func:`masked_adam_step`, hard or leaky masks). The
    standard errors, for the add-ons that need them, come from :func:`feasible.noise.grad_stats`
    (``noise="microbatch"`` or ``"per_sample"``) or from :func:`feasible.noise.ema_scale` of
    the batch gradients (``noise="ema"``: one backward per loss, one state per loss carried
    across steps and epochs); otherwise one backward per loss, and a gradient whose weight is 0
    and that no add-on needs is not computed. An add-on whose saliency mask is per step
    (``salun_step``) recomputes it on every forget batch from the gradient of ``-CE``
    (:func:`feasible.masks.saliency_mask` with ``per_tensor=True``): the forget gradient itself
    where the method's ``L_U`` is ``-CE``, else one more backward pass.

    Batchings: a pass over one set draws batches of the other set alongside, from one stream
    that runs on across epochs (``partner="cycle"``) or from a fresh shuffled pass each epoch
    (``partner="epoch"``, the authors'). The mixed batching (DeepUnlearn's SRL) walks D_f and
    D_r together; an add-on that compares the two gradients gets the mean gradients of each
    batch's forget and retain parts weighted by their shares of the batch (a part too small for
    the noise model, fewer than 2 samples with micro-batch or per-sample errors, or empty, is
    left out of that step: zero gradient, zero standard error, its ``ema`` state unchanged);
    otherwise the batch is one forward and backward pass of its mean loss, as DeepUnlearn's.

    The model stays in train mode (BatchNorm uses batch statistics and updates its running
    ones, as in the authors' code). Seeded generators, one per random stream (batch order,
    augmentation, random labels), make a run a function of ``cfg.seed``; the main pass's stream
    does not depend on the add-on.

    A batch smaller than ``k`` (or 2) at the end of a pass joins the batch before it, so that
    every batch can give ``k`` micro-batches. The l1-sparse penalty's gradient
    ``gamma_t * sign(theta)`` is added to ``g_C`` (it is exact, so ``s_C`` is unchanged).

    Each epoch's record has: ``epoch`` (1-based), ``steps``, ``wall_time`` (s, this epoch's
    unlearning), ``cpu_time`` (its CPU seconds, all threads), ``kept_fraction`` (mean over steps of the share of coordinates the mask keeps),
    ``kept_fraction_active`` (the same over the coordinates where at least one of the two
    gradients is non-zero), ``step_norm`` (mean L2 norm of the parameter change),
    ``direction_ratio`` (mean ``||u|| / ||a||``, the update over the unmasked aggregate, over
    steps where ``a`` is not 0; ``None`` if none), ``masked_moved_fraction`` (of the masked
    coordinates of all steps, the share that moved anyway: 0 under hard masks, the leak under
    leaky ones; ``None`` if nothing was masked), ``loss_u`` and ``loss_c`` (mean batch losses
    where computed, else ``None``; ``loss_c`` without the penalty), ``l1_weight`` for methods
    with a penalty, ``diverged``, and whatever ``on_epoch(epoch, model)`` returns.

    Divergence never raises: when a loss, a gradient or a parameter becomes NaN or infinite, the
    loop stops, that epoch's record has ``diverged = True`` (``on_epoch`` is still called) and
    ``diverged_epoch`` is set.

    References:
        Dine, Furon, Faure (2025), Algorithm 1 (this project's reading); the authors' loops,
        ``unlearn/NGradFocus.py``, ``NGradMask.py``, ``SRGradFocus.py``, ``SRGradMask.py``,
        ``SalUn.py`` and ``impl.py`` of owl1996/UnlearningFocusVector.

    Args:
        model: the original model (theta0), updated in place.
        forget: the forget set ``(x, y)``, ``x`` as the model takes it (uint8 or float [0, 1]).
        retain: the retain set ``(x, y)``.
        cfg: the run's settings.
        num_classes: the number of classes (random labels are drawn among them), >= 2.
        augment_policy: the :func:`feasible.data.augment` policy applied to every batch.
        on_step: called at every step, before the optimiser moves, with a dict of the step's
            ``g_u``, ``g_c``, ``se_u``, ``se_c`` (the estimates, by parameter name), ``keep``,
            ``direction``, ``loss_u`` and ``loss_c`` (the batch losses, or None). With it, both
            gradients and their standard errors (from ``noise``) are estimated at every step,
            whatever the add-on needs; what the step does is unchanged.
        on_epoch: called after each epoch as ``on_epoch(epoch, model)``; a dict it returns is
            merged into the epoch's record. Its time is not counted.

    Returns:
        The per-epoch records, the diverged epoch (or ``None``) and the wall time.

    Raises:
        TypeError: if ``cfg`` is not an :class:`UnlearnConfig`.
        ValueError: for an empty set, ``x`` and ``y`` of different lengths, a set of one sample
            when the add-on needs standard errors, or ``num_classes < 2``.
    """
    if not isinstance(cfg, UnlearnConfig):
        raise TypeError(f"The 'cfg' parameter of unlearn must be an UnlearnConfig. "
                        f"Got {type(cfg).__name__} instead.")
    addon = ADDONS[cfg.addon]
    rule = cfg.spec.rule
    watched = on_step is not None  # the observer sees both estimates and their errors
    needs_both = addon.needs_both or watched or rule == "eupmu"  # EUPMU compares g_f and g_r
    needs_se = addon.needs_se or watched
    for name, (x, y) in (("forget", forget), ("retain", retain)):
        if len(x) != len(y) or len(y) < (2 if needs_se else 1):
            raise ValueError(
                f"The '{name}' parameter of unlearn must be an (x, y) pair of equal lengths with "
                f"at least {2 if needs_se else 1} sample(s) for add-on {cfg.addon!r}. "
                f"Got lengths {len(x)} and {len(y)} instead.")
    if not (is_int(num_classes) and num_classes >= 2):
        raise ValueError(f"The 'num_classes' parameter of unlearn must be an int >= 2. "
                         f"Got {num_classes!r} instead.")

    start, start_cpu = time.perf_counter(), time.process_time()
    spec = cfg.spec
    alpha, beta = cfg.weights
    losses = {"forget": LOSSES[spec.loss_u], "retain": LOSSES[spec.loss_c]}
    ema = needs_se and cfg.noise == "ema"
    with_se = needs_se and not ema  # standard errors from grad_stats
    min_size = max(2, cfg.k) if with_se and cfg.noise == "microbatch" else 2
    part_min = 2 if with_se else 1  # the smallest part of a mixed batch an estimate can use
    sets = {"forget": forget, "retain": retain}
    device = next(model.parameters()).device
    streams = _Streams(cfg.seed)
    cpu = torch.device("cpu")

    def partner_streams() -> dict[str, Iterator[Tensor]]:
        return {s: _cycle(len(sets[s][1]), cfg.batch_size, streams("partner", s, "order", cpu),
                          min_size) for s in sets}

    partners = partner_streams()
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    saliency = (saliency_at(model, forget, fraction=cfg.saliency_fraction)
                if addon.saliency == "theta0" else None)
    step_saliency = addon.saliency == "step"  # recomputed on each forget batch below
    ema_state: dict[str, Tree | None] = {"forget": None, "retain": None}  # one V per loss
    leaky = cfg.mask_mode == "leaky"
    if cfg.optimizer == "adam":
        state: Any = AdamState(None, None, None)

        def take_step(direction: Tree, keep: Tree, state: Any) -> tuple[Tree, Any]:
            return masked_adam_step(params, direction, keep, state, lr=cfg.learning_rate,
                                    weight_decay=cfg.weight_decay, leaky=leaky)
    else:
        state = MomentumState(None)

        def take_step(direction: Tree, keep: Tree, state: Any) -> tuple[Tree, Any]:
            return masked_sgd_step(params, direction, keep, state, lr=cfg.learning_rate,
                                   momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                                   leaky=leaky)
    eu_w, eu_state = float(cfg.eupmu_w_init), AdamScalar()  # EUPMU's implicit weight
    projections = 0  # MinNorm-OG's projections so far
    setup_time = time.perf_counter() - start
    records: list[dict[str, Any]] = []
    wall_time, cpu_time = setup_time, time.process_time() - start_cpu

    def draw(which: str, role: str, idx: Tensor) -> Batch:
        """The batch ``idx`` of one set: augmented, on the model's device, relabelled."""
        x, y = sets[which]
        idx = idx.to(y.device)
        x = x[idx]
        if augment_policy != "none":  # augment takes uint8 images; "none" also passes floats
            x = data.augment(x, augment_policy, streams(role, which, "augment", x.device))
        y = y[idx].to(device)
        return x.to(device), losses[which].relabel(y, streams(role, which, "labels", device),
                                                   num_classes)

    def schedule(one_pass: Pass) -> Iterator[tuple[dict[str, tuple[Tensor, str]], float, float]]:
        """Per step: the index batch and stream role of each set drawn, and the two weights."""
        a_w, b_w = alpha * one_pass.alpha_factor, beta * one_pass.beta_factor
        if one_pass.over == "union":
            n_f = len(forget[1])
            order = _index_batches(n_f + len(retain[1]), cfg.batch_size,
                                   streams("main", "union", "order", cpu), min_size)
            for idx in order:
                parts = {"forget": idx[idx < n_f], "retain": idx[idx >= n_f] - n_f}
                yield ({s: (i, "main") for s, i in parts.items()},
                       a_w * len(parts["forget"]) / len(idx),
                       b_w * len(parts["retain"]) / len(idx))
            return
        need = {"forget": needs_both or a_w > 0 or step_saliency,
                "retain": needs_both or b_w > 0}
        other = "retain" if one_pass.over == "forget" else "forget"
        main = _index_batches(len(sets[one_pass.over][1]), cfg.batch_size,
                              streams("main", one_pass.over, "order", cpu), min_size)
        for idx in main:
            sides = {one_pass.over: (idx, "main")} if need[one_pass.over] else {}
            if need[other]:
                sides[other] = (next(partners[other]), "partner")
            yield sides, a_w, b_w

    model.train()
    for epoch in range(1, cfg.epochs + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        gamma = l1_weight(cfg.l1_gamma, epoch - 1, cfg.epochs)
        sums: dict[str, Any] = {"loss_u": 0.0, "loss_u_n": 0, "loss_c": 0.0, "loss_c_n": 0}
        related: dict[str, float] = {"lambda": 0.0, "lambda_n": 0, "lambda_active": 0,
                                     "coef": 0.0, "projections": 0}
        project = (rule == "minnorm_og" and epoch - 1 < cfg.epochs - cfg.minnorm_gd_epochs
                   and (epoch - 1) % cfg.minnorm_every == 0)
        steps, diverged = 0, False
        if spec.partner == "epoch" and epoch > 1:  # a fresh shuffled pass of each partner set
            partners = partner_streams()
        for one_pass in passes(spec):
            joint = one_pass.over == "union" and not needs_both
            for sides, a_w, b_w in schedule(one_pass):
                est: dict[str, _Estimate | None] = {"forget": None, "retain": None}
                drawn = {which: draw(which, role, idx) for which, (idx, role) in sides.items()
                         if len(idx)}
                if project and "retain" in drawn:  # MinNorm-OG: towards the minimum norm first
                    coef = minnorm_coefficient(cfg.minnorm_reg, cfg.minnorm_decay, projections)
                    minnorm_project(model, params, *drawn["retain"], coef=coef,
                                    samples=cfg.minnorm_samples,
                                    generator=streams("main", "retain", "minnorm", cpu))
                    projections += 1
                    related["coef"], related["projections"] = coef, related["projections"] + 1
                if rule == "eupmu_implicit":  # one backward pass of w log L_r + log L_f
                    x_all = torch.cat([drawn[w][0] for w in drawn])
                    outputs = torch.split(model(x_all), [len(drawn[w][1]) for w in drawn])
                    total, shares = None, {}
                    for (which, (_, y)), out in zip(drawn.items(), outputs):
                        loss = losses[which].criterion(out, y)
                        est[which] = _Estimate({}, None, float(loss.detach()))
                        shares[which] = len(y) / len(x_all)
                        weight = 1.0 if which == "forget" else max(eu_w, 0.0)
                        if weight > 0:
                            term = weight * torch.log(shares[which] * loss + EUPMU_EPS)
                            total = term if total is None else total + term
                    g_u = _zeros(params)
                    g_c = _zeros(params) if total is None else _grads(params, total)
                    se_u = se_c = _zeros(params) if needs_se else None
                    a_w, b_w = 0.0, 1.0
                elif joint:  # one forward and backward pass of the mixed batch's mean loss
                    x_all = torch.cat([drawn[w][0] for w in drawn])
                    outputs = torch.split(model(x_all), [len(drawn[w][1]) for w in drawn])
                    total, n = 0.0, len(x_all)
                    for (which, (_, y)), out in zip(drawn.items(), outputs):
                        loss = losses[which].criterion(out, y)
                        weight = alpha if which == "forget" else beta
                        total = total + weight * len(y) / n * loss
                        est[which] = _Estimate({}, None, float(loss.detach()))
                    g_u, g_c = _zeros(params), _grads(params, total)
                    se_u = se_c = None
                    a_w, b_w = 0.0, 1.0
                else:
                    for which in ("forget", "retain"):
                        if which in drawn and len(drawn[which][1]) >= part_min:
                            x, y = drawn[which]
                            est[which] = _estimate(model, params, losses[which].criterion, x, y,
                                                   cfg, with_se)
                            if ema:
                                se, ema_state[which] = ema_step(est[which].mean,
                                                                ema_state[which], EMA_RHO, EMA_EPS)
                                est[which] = est[which]._replace(se=se)
                    est_u, est_c = est["forget"], est["retain"]
                    g_u = est_u.mean if est_u else _zeros(params)
                    g_c = est_c.mean if est_c else _zeros(params)
                    se_u = (est_u.se if est_u else _zeros(params)) if needs_se else None
                    se_c = (est_c.se if est_c else _zeros(params)) if needs_se else None
                    a_w, b_w = (a_w if est_u else 0.0), (b_w if est_c else 0.0)
                if step_saliency and "forget" in drawn:
                    x, _ = drawn["forget"]
                    idx = sides["forget"][0].to(sets["forget"][1].device)
                    reuse = not joint and spec.loss_u == "neg_ce" and est["forget"] is not None
                    saliency = _batch_saliency(
                        model, params, x, sets["forget"][1][idx].to(device),
                        est["forget"].mean if reuse else None, cfg.saliency_fraction)
                elif step_saliency and saliency is None:  # no forget batch yet: mask nothing
                    saliency = {n: torch.ones_like(p, dtype=torch.bool)
                                for n, p in params.items()}
                if spec.penalty is not None and est["retain"] is not None:
                    penalty = PENALTIES[spec.penalty](params, gamma)
                    g_c = {n: g_c[n] + penalty[n] for n in g_c}
                batch_losses = [e.loss for e in est.values() if e is not None]
                if not (all(math.isfinite(v) for v in batch_losses)
                        and _finite(g_u, g_c, se_u, se_c)):
                    diverged = True
                    break
                if rule == "eupmu":  # g_f + lambda* g_r, clipped, as the weights of the two
                    a_w, b_w, lam = eupmu_weights(g_u, g_c, a_w, b_w, eps=cfg.eupmu_eps,
                                                  max_norm=cfg.eupmu_max_norm)
                    related["lambda"] += lam
                    related["lambda_n"] += 1
                    related["lambda_active"] += lam > 0
                update = compute_update(  # the inputs are the loop's own: no re-validation
                    g_u, g_c, se_u, se_c, addon=cfg.addon, agg=cfg.agg, alpha=a_w, beta=b_w,
                    p=cfg.p, saliency=saliency, focus_variant=cfg.focus_variant,
                    renorm=cfg.renorm)
                if watched:
                    on_step({"g_u": g_u, "g_c": g_c, "se_u": se_u, "se_c": se_c,
                             "keep": update.keep, "direction": update.direction,
                             "loss_u": est["forget"].loss if est["forget"] else None,
                             "loss_c": est["retain"].loss if est["retain"] else None})
                step, state = take_step(update.direction, update.keep, state)
                if rule == "eupmu_implicit" and "retain" in drawn:  # w from the retain loss
                    with torch.no_grad():  # the same batch after the step (train mode, theirs)
                        after = torch.split(model(x_all), [len(drawn[w][1]) for w in drawn])
                    y_r = drawn["retain"][1]
                    loss_after = float(losses["retain"].criterion(after[list(drawn).index(
                        "retain")], y_r))
                    share = shares["retain"]
                    delta = (math.log(share * est["retain"].loss + EUPMU_EPS)
                             - math.log(share * loss_after + EUPMU_EPS) - cfg.eupmu_error)
                    if math.isfinite(delta):
                        eu_w, eu_state = eupmu_w_step(eu_w, delta, eu_state, lr=cfg.eupmu_w_lr,
                                                      weight_decay=cfg.eupmu_w_decay)
                aggregate = aggregate_unchecked(g_u, g_c, cfg.agg, a_w, b_w)
                for key, value in _step_stats(update.keep, g_u, g_c, update.direction, aggregate,
                                              step).items():
                    sums[key] = sums.get(key, 0.0) + value
                for side, e in (("loss_u", est["forget"]), ("loss_c", est["retain"])):
                    if e is not None:
                        sums[side] += e.loss
                        sums[side + "_n"] += 1
                steps += 1
            if diverged:
                break
        diverged = diverged or not _finite({n: p.detach() for n, p in params.items()})
        epoch_time, epoch_cpu = time.perf_counter() - t0, time.process_time() - c0
        wall_time, cpu_time = wall_time + epoch_time, cpu_time + epoch_cpu
        record: dict[str, Any] = {"epoch": epoch, "steps": steps, "wall_time": epoch_time,
                                  "cpu_time": epoch_cpu, **_epoch_means(sums, steps),
                                  "diverged": diverged}
        if spec.penalty is not None:
            record["l1_weight"] = gamma
        if rule == "eupmu":  # the mean multiplier and the share of steps where it was > 0
            n = related["lambda_n"]
            record["eupmu_lambda"] = related["lambda"] / n if n else None
            record["eupmu_active_fraction"] = related["lambda_active"] / n if n else None
        elif rule == "eupmu_implicit":
            record["eupmu_w"] = eu_w
        elif rule == "minnorm_og":
            record["minnorm_projections"] = int(related["projections"])
            record["minnorm_coef"] = related["coef"] if related["projections"] else None
        if on_epoch is not None:
            record.update(on_epoch(epoch, model) or {})
            model.train()
        records.append(record)
        if diverged:
            return UnlearnResult(records, epoch, wall_time, setup_time, cpu_time)
    return UnlearnResult(records, None, wall_time, setup_time, cpu_time)
