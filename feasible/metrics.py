"""Unlearning metrics: UA, RA, TA, SalUn's MIA-efficacy, gaps to the retrained model."""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import torch
from sklearn.svm import SVC
from torch import Tensor, nn

__all__ = ["METRICS", "accuracy", "epochs_to_reach", "evaluate", "gaps", "mia_efficacy",
           "relative_ua"]

Batch = tuple[Tensor, Tensor]

#: The metrics :func:`evaluate` returns, in the order of SalUn's tables.
METRICS: tuple[str, ...] = ("UA", "RA", "TA", "MIA")


def _check_set(name: str, batch: Batch) -> None:
    x, y = batch
    if len(y) == 0 or len(x) != len(y):
        raise ValueError(f"The '{name}' parameter must be a non-empty (x, y) pair of equal "
                         f"lengths. Got lengths {len(x)} and {len(y)} instead.")


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"The 'batch_size' parameter must be an int >= 1. "
                         f"Got {batch_size!r} instead.")


@torch.no_grad()
def _predict(model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> tuple[Tensor, Tensor]:
    """Per sample: correct (bool) and the softmax probability of the true label, on the CPU.

    The model is evaluated in eval mode and its mode restored. A sample whose logits are not all
    finite counts as wrong and gets a NaN confidence.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct, confidence = [], []
    try:
        for start in range(0, len(y), batch_size):
            xb = x[start:start + batch_size].to(device)
            yb = y[start:start + batch_size].to(device)
            logits = model(xb).double()
            finite = torch.isfinite(logits).all(dim=1)
            correct.append(((logits.argmax(dim=1) == yb) & finite).cpu())
            conf = logits.softmax(dim=1).gather(1, yb[:, None]).squeeze(1)
            confidence.append(torch.where(finite, conf, torch.full_like(conf, math.nan)).cpu())
    finally:
        model.train(was_training)
    return torch.cat(correct), torch.cat(confidence)


def accuracy(model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int = 512) -> float:
    """The percentage of ``x`` that ``model`` classifies as ``y``.

    Evaluated in eval mode without gradients; the model's mode is restored. A sample whose
    logits are NaN or infinite counts as misclassified.

    Args:
        model: the classifier.
        x: inputs as the model takes them, ``(N, ...)``, N >= 1.
        y: int64 labels ``(N,)``.
        batch_size: samples per forward pass, >= 1.

    Returns:
        The accuracy in percent, in [0, 100].

    Raises:
        ValueError: for an empty set, ``x`` and ``y`` of different lengths, or a bad batch size.
    """
    _check_set("x, y", (x, y))
    _check_batch_size(batch_size)
    correct, _ = _predict(model, x, y, batch_size)
    return 100.0 * correct.double().mean().item()


def mia_efficacy(member: Tensor, non_member: Tensor, target: Tensor) -> float:
    """SalUn's MIA-efficacy from true-label confidences.

    Fits ``SVC(C=3, gamma="auto", kernel="rbf")`` (SalUn's ``SVC_MIA``) on the confidences of
    members (label 1) and non-members (label 0), then returns the percentage of ``target``
    predicted as non-members. Any NaN confidence gives NaN (a diverged model has no attack).

    References:
        research/baselines.md §A.7 (SalUn's ``evaluation/SVC_MIA.py``).

    Args:
        member: 1-D confidences of the shadow members (retain samples).
        non_member: 1-D confidences of the shadow non-members (test samples).
        target: 1-D confidences of the samples attacked (the forget set).

    Returns:
        The MIA-efficacy in percent, or NaN.
    """
    features = [t.double().reshape(-1, 1).numpy() for t in (member, non_member, target)]
    if not all(np.isfinite(f).all() for f in features):
        return math.nan
    train = np.concatenate(features[:2])
    labels = np.concatenate([np.ones(len(features[0])), np.zeros(len(features[1]))])
    attack = SVC(C=3, gamma="auto", kernel="rbf").fit(train, labels)
    return 100.0 * float((attack.predict(features[2]) == 0).mean())


def evaluate(
    model: nn.Module,
    *,
    forget: Batch,
    retain: Batch,
    test: Batch,
    batch_size: int = 512,
    mia_samples: int | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """The four metrics of SalUn's tables for one model.

    ``UA = 100 - Acc(D_f)``, ``RA = Acc(D_r)``, ``TA = Acc(test)`` (pass the test set with the
    forgotten class removed for class-wise forgetting), and ``MIA`` (:func:`mia_efficacy`). The
    attack's members are a seeded random subset of the retain set of the test set's size (SalUn
    takes the first ``|test|`` retain samples), its non-members the test set; ``mia_samples`` caps
    both (the RBF SVC's cost grows quadratically). A model with non-finite logits gets
    accuracies with those samples counted wrong and ``MIA = nan``; nothing raises.

    References:
        research/baselines.md §A.7; DESIGN.md (metrics).

    Args:
        model: the classifier; its mode is restored.
        forget: the forget set ``(x, y)``.
        retain: the retain set ``(x, y)``.
        test: the test set ``(x, y)``.
        batch_size: samples per forward pass, >= 1.
        mia_samples: at most this many members and as many non-members (>= 2), or ``None``.
        seed: seeds the subsampling, >= 0.

    Returns:
        ``{"UA", "RA", "TA", "MIA"}``, all in percent.

    Raises:
        ValueError: for an empty set, a bad batch size, ``mia_samples`` or seed.
    """
    for name, batch in (("forget", forget), ("retain", retain), ("test", test)):
        _check_set(name, batch)
    _check_batch_size(batch_size)
    if mia_samples is not None and (isinstance(mia_samples, bool)
                                    or not isinstance(mia_samples, int) or mia_samples < 2):
        raise ValueError(f"The 'mia_samples' parameter of evaluate must be None or an int >= 2. "
                         f"Got {mia_samples!r} instead.")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"The 'seed' parameter of evaluate must be an int >= 0. "
                         f"Got {seed!r} instead.")
    generator = torch.Generator().manual_seed(seed)
    f_correct, f_conf = _predict(model, *forget, batch_size)
    r_correct, _ = _predict(model, *retain, batch_size)
    t_correct, t_conf = _predict(model, *test, batch_size)
    n_shadow = min(len(test[1]), len(retain[1]), mia_samples or len(test[1]))
    members = torch.randperm(len(retain[1]), generator=generator)[:n_shadow]
    non_members = torch.randperm(len(test[1]), generator=generator)[:n_shadow]
    _, m_conf = _predict(model, retain[0][members.to(retain[1].device)],
                         retain[1][members.to(retain[1].device)], batch_size)
    return {
        "UA": 100.0 - 100.0 * f_correct.double().mean().item(),
        "RA": 100.0 * r_correct.double().mean().item(),
        "TA": 100.0 * t_correct.double().mean().item(),
        "MIA": mia_efficacy(m_conf, t_conf[non_members], f_conf),
    }


def gaps(metrics: Mapping[str, float], reference: Mapping[str, float],
         keys: Sequence[str] = METRICS) -> dict[str, float]:
    """The absolute gap of each metric to a reference (the retrained model) and their mean.

    Args:
        metrics: the model's metrics.
        reference: the reference's metrics.
        keys: the metrics compared; each must be in both.

    Returns:
        ``{key: |metrics[key] - reference[key]|}`` for each key, plus ``"avg_gap"``, their mean
        (SalUn's Avg. Gap). NaN in, NaN out.

    Raises:
        ValueError: when a key is missing from either mapping, or ``keys`` is empty.
    """
    if not keys:
        raise ValueError("The 'keys' parameter of gaps must name at least one metric. Got none.")
    for name, mapping in (("metrics", metrics), ("reference", reference)):
        missing = [k for k in keys if k not in mapping]
        if missing:
            raise ValueError(f"The '{name}' parameter of gaps lacks {missing}; "
                             f"expected the keys {list(keys)}.")
    out = {k: abs(float(metrics[k]) - float(reference[k])) for k in keys}
    out["avg_gap"] = sum(out[k] for k in keys) / len(keys)
    return out


def relative_ua(ua: float, ua_retrain: float) -> float:
    """The relative unlearning accuracy, read as ``UA / UA_retrain``.

    The paper names the metric without a formula; this ratio (1 is the retrained model's
    forgetting) is the project's *reading* (research/paper-reconstruction.md §4).

    Args:
        ua: the model's UA in percent, >= 0.
        ua_retrain: the retrained model's UA in percent, >= 0.

    Returns:
        The ratio, or NaN when ``ua_retrain`` is 0 (or either is NaN).

    Raises:
        ValueError: for a negative UA.
    """
    for name, value in (("ua", ua), ("ua_retrain", ua_retrain)):
        if value < 0:
            raise ValueError(f"The '{name}' parameter of relative_ua must be >= 0. "
                             f"Got {value!r} instead.")
    if math.isnan(ua) or math.isnan(ua_retrain) or ua_retrain == 0:
        return math.nan
    return float(ua) / float(ua_retrain)


def epochs_to_reach(ua_per_epoch: Sequence[float], target: float, tol: float = 1.0) -> int | None:
    """The first epoch whose UA is within ``tol`` points of ``target`` (DESIGN.md).

    Args:
        ua_per_epoch: UA after epochs 1, 2, ... (NaN entries never count).
        target: the UA to reach, usually the retrained model's.
        tol: the tolerance in points, >= 0.

    Returns:
        The 1-based epoch, or ``None`` if no epoch comes within ``tol``.

    Raises:
        ValueError: for a negative ``tol``.
    """
    if not tol >= 0:
        raise ValueError(f"The 'tol' parameter of epochs_to_reach must be >= 0. "
                         f"Got {tol!r} instead.")
    for epoch, ua in enumerate(ua_per_epoch, start=1):
        if abs(ua - target) <= tol:
            return epoch
    return None
