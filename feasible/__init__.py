"""feasible: feasible updates (AND, PROB, focus) as add-ons to first-order unlearning.

A reproduction of Dine, Furon and Faure, "Improving Unlearning with Model Updates Probably
Aligned with Gradients" (AISec 2025). Three layers, each using only those above it:

1. the math on tensors (``masks``, ``noise``): the names exported here, for one's own loop;
2. the experiment engine (``data``, ``models``, ``methods``, ``unlearn``, ``metrics``,
   ``train``, ``experiment``, ``sweep``, ``bench``): one configuration in, one record out;
3. the book's helpers (``demo``, ``theory``, ``theory_prob``, ``checks``).
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
