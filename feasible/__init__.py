"""feasible: feasible updates (AND, PROB, focus) as add-ons to first-order unlearning.

A reproduction of Dine, Furon and Faure, "Improving Unlearning with Model Updates Probably
Aligned with Gradients" (AISec 2025). The functions below are the library's public API; the
experiment engine lives in the submodules ``data``, ``models``, ``train``, ``methods``,
``unlearn``, ``metrics`` and ``experiment``.
"""
from feasible.masks import (
    ADDONS,
    AGGREGATORS,
    FOCUS_VARIANTS,
    Addon,
    agreement_probability,
    and_mask,
    certified_mask,
    Update,
    feasible_direction,
    feasible_update,
    focus,
    lin_g,
    min_g,
    phi,
    prob_mask,
    saliency_mask,
)
from feasible.noise import NOISE_MODELS, ema_scale, grad_stats

__version__ = "0.1.0"

__all__ = [
    "ADDONS",
    "AGGREGATORS",
    "FOCUS_VARIANTS",
    "NOISE_MODELS",
    "Addon",
    "agreement_probability",
    "and_mask",
    "certified_mask",
    "ema_scale",
    "Update",
    "feasible_direction",
    "feasible_update",
    "focus",
    "grad_stats",
    "lin_g",
    "min_g",
    "phi",
    "prob_mask",
    "saliency_mask",
]
