"""Unlearning metrics: UA, RA, TA, membership inference, and the authors' rUA and FID."""
from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator, Mapping, NamedTuple, Sequence

import numpy as np
import torch
from sklearn.svm import SVC
from torch import Tensor, nn

__all__ = ["METRICS", "MIA_FEATURES", "accuracy", "attack_features", "epochs_to_reach",
           "MIA_RESOLUTION", "evaluate", "fidelity", "gaps", "mia_efficacy", "predict", "rua", "svm_member_rate",
           "ua_ratio"]

Batch = tuple[Tensor, Tensor]

#: The metrics :func:`evaluate` always returns, in the order of SalUn's tables; the Avg. Gap is
#: taken over them.
METRICS: tuple[str, ...] = ("UA", "RA", "TA", "MIA")

#: The five attack features of the SVM membership-inference attack, as the authors' code names
#: them (``evaluation/SVC_MIA.py`` of owl1996/UnlearningFocusVector, after SalUn's). ``MIA`` is
#: SalUn's efficacy on ``"confidence"``.
MIA_FEATURES: tuple[str, ...] = ("correctness", "confidence", "entropy", "m_entropy", "prob")


def _check_set(name: str, batch: Batch) -> None:
    x, y = batch
    if len(y) == 0 or len(x) != len(y):
        raise ValueError(f"The '{name}' parameter must be a non-empty (x, y) pair of equal "
                         f"lengths. Got lengths {len(x)} and {len(y)} instead.")


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"The 'batch_size' parameter must be an int >= 1. "
                         f"Got {batch_size!r} instead.")


class _Outputs(NamedTuple):
    """One model's outputs on a set, on the CPU: float64 softmax and predicted labels."""

    probs: Tensor  # (N, C); NaN rows where the logits are not all finite
    predictions: Tensor  # (N,) int64; -1 where the logits are not all finite


@contextlib.contextmanager
def _channels_last(model: nn.Module, device: torch.device, enabled: bool) -> Iterator[None]:
    """A CPU model with 2-D convolutions holds its 4-D weights in channels-last layout for the
    duration, then contiguous again (the parameters stay the same objects).

    oneDNN's channels-last convolutions make evaluation's forward passes faster on the CPU
    (``python -m feasible bench``'s evaluation rows measure it, alternating both layouts: about
    0.5x the time for the small CNN, 0.7-0.9x for ResNet18 and VGG16-BN at one thread); the
    logits change at the level of float rounding (about 1e-6), as between CPU kernels.
    """
    if not (enabled and device.type == "cpu"
            and any(isinstance(m, nn.Conv2d) for m in model.modules())):
        yield
        return
    model.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        model.to(memory_format=torch.contiguous_format)


@torch.no_grad()
def _outputs(model: nn.Module, x: Tensor, batch_size: int, fast_layout: bool = True) -> _Outputs:
    """The model's softmax and predictions on ``x``, in eval mode; its mode is restored.

    ``fast_layout``: convolutions in channels-last layout on the CPU (:func:`_channels_last`).
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    probs, predictions = [], []
    with contextlib.ExitStack() as stack:
        stack.enter_context(_channels_last(model, device, fast_layout))
        stack.callback(model.train, was_training)
        for start in range(0, len(x), batch_size):
            logits = model(x[start:start + batch_size].to(device)).double()
            finite = torch.isfinite(logits).all(dim=1, keepdim=True)
            p = logits.softmax(dim=1)
            probs.append(torch.where(finite, p, torch.full_like(p, math.nan)).cpu())
            pred = torch.where(finite[:, 0], logits.argmax(dim=1), -1)
            predictions.append(pred.cpu())
    return _Outputs(torch.cat(probs), torch.cat(predictions))


def _percent_equal(a: Tensor, b: Tensor) -> float:
    return 100.0 * (a == b.to(a.device)).double().mean().item()


def predict(model: nn.Module, x: Tensor, *, batch_size: int = 512) -> Tensor:
    """The labels ``model`` predicts for ``x`` (argmax of the logits), on the CPU.

    Evaluated in eval mode without gradients; the model's mode is restored. A sample whose
    logits are NaN or infinite gets the label -1 (it matches no class).

    Args:
        model: the classifier.
        x: inputs as the model takes them, ``(N, ...)``, N >= 1.
        batch_size: samples per forward pass, >= 1.

    Returns:
        int64 labels ``(N,)``.

    Raises:
        ValueError: for an empty ``x`` or a bad batch size.
    """
    if len(x) == 0:
        raise ValueError("The 'x' parameter of predict must hold at least one sample. Got 0.")
    _check_batch_size(batch_size)
    return _outputs(model, x, batch_size).predictions


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
    return _percent_equal(_outputs(model, x, batch_size).predictions, y.cpu())


# --- membership inference ----------------------------------------------------------------------

def _entropy(p: Tensor) -> Tensor:
    """Shannon entropy per row, ``0 * log 0 = 0``."""
    return -torch.where(p > 0, p * p.log(), torch.zeros_like(p)).sum(dim=1)


def _m_entropy(p: Tensor, labels: Tensor) -> Tensor:
    """The authors' "m-entropy": the entropy with the true class's ``p_y`` replaced by ``1 - p_y``.

    ``-(1 - p_y) log(1 - p_y) - sum_{k != y} p_k log p_k``, logs of 0 taken as ``log 1e-30``.
    """
    tiny = math.log(1e-30)
    log_p = torch.where(p > 0, p.log(), torch.full_like(p, tiny))
    log_q = torch.where(1 - p > 0, (1 - p).log(), torch.full_like(p, tiny))
    rows = torch.arange(len(labels))
    probs, logs = p.clone(), log_p.clone()
    probs[rows, labels] = 1 - p[rows, labels]
    logs[rows, labels] = log_q[rows, labels]
    return -(probs * logs).sum(dim=1)


def attack_features(probs: Tensor, labels: Tensor) -> dict[str, Tensor]:
    """The five features of the SVM attack, from a model's softmax output.

    As the authors' ``evaluation/SVC_MIA.py`` (owl1996/UnlearningFocusVector, after SalUn's)
    computes them: ``correctness`` (1 where the argmax is the label, else 0), ``confidence``
    (the probability of the label), ``entropy`` (Shannon, ``0 log 0 = 0``), ``m_entropy``
    (the entropy with the label's :math:`p_y` replaced by :math:`1 - p_y`, i.e.
    :math:`-(1 - p_y)\\log(1 - p_y) - \\sum_{k \\ne y} p_k \\log p_k`, a log of 0 read as
    :math:`\\log 10^{-30}`; note that this is the authors' code, not Song and Mittal's modified
    entropy :math:`-(1 - p_y)\\log p_y - \\sum_{k \\ne y} p_k \\log(1 - p_k)`, and that
    SalUn's own ``m_entropy`` indexes every row with every label), and ``prob`` (the whole
    probability vector). All five come from one forward pass.

    Args:
        probs: softmax probabilities ``(N, C)``, float.
        labels: int64 true labels ``(N,)`` in ``[0, C)``.

    Returns:
        Feature name (:data:`MIA_FEATURES`) to a float64 ``(N, d)`` array: ``d = 1``, or ``C``
        for ``prob``. A row of NaN probabilities gives NaN features (``correctness`` too).
    """
    p = probs.double()
    labels = labels.to(p.device).long()
    finite = torch.isfinite(p).all(dim=1)
    features = {
        "correctness": (p.argmax(dim=1) == labels).double(),
        "confidence": p.gather(1, labels[:, None]).squeeze(1),
        "entropy": _entropy(p),
        "m_entropy": _m_entropy(p, labels),
        "prob": p,
    }
    nan = torch.tensor(math.nan, dtype=p.dtype, device=p.device)
    return {name: torch.where(finite[:, None], f.reshape(len(p), -1), nan)
            for name, f in features.items()}


#: The grid on which :func:`svm_member_rate` merges feature values by default (see there).
MIA_RESOLUTION: float = 1e-4


def _rounded(x: np.ndarray, resolution: float | None) -> np.ndarray:
    return x if resolution is None else np.round(x / resolution) * resolution


def _merge(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct rows of ``x``, the index of each row's among them, and their counts."""
    rows, inverse, counts = np.unique(x, axis=0, return_inverse=True, return_counts=True)
    return rows, inverse.reshape(-1), counts


def svm_member_rate(member: Tensor, non_member: Tensor, target: Tensor, *,
                    resolution: float | None = MIA_RESOLUTION, merge: bool = True) -> float:
    """The share of ``target`` an SVM attack predicts to be members, in percent.

    Fits ``SVC(C=3, gamma="auto", kernel="rbf")`` (SalUn's and the authors' ``SVC_MIA``) on the
    features of members (label 1) and non-members (label 0), then predicts ``target``. The
    authors report this rate on the forget set (lower: more forgotten); SalUn's MIA-efficacy is
    ``100 -`` it. Any NaN or infinite feature gives NaN (a diverged model has no attack).

    **Merged samples (this project's speed-up, the same SVM).** Every feature value is first
    rounded to a multiple of ``resolution``; identical (value, label) training samples are then
    fitted once, with their count as ``sample_weight``, and each distinct target value is
    predicted once. Fitting ``n`` copies of a point with weight 1 and fitting it once with
    weight ``n`` is the same dual problem (each copy's bound ``C`` adds up to ``n C``), so with
    ``resolution=None`` (identical values only) the attack is SalUn's exactly, up to the
    solver's tolerance; rounding to ``1e-4`` moves a feature by at most ``5e-5`` against an RBF
    width of 1 (``gamma="auto"`` is ``1 / d``). Memorised models give many equal confidences
    near 1, so 20k samples shrink to a few thousand distinct ones; the book's Reproducibility
    page shows the agreement with the unmerged SVM on real models. Nothing is subsampled.

    References:
        ``evaluation/SVC_MIA.py`` (``SVC_classifiers``, ``SVC_predict``) of
        owl1996/UnlearningFocusVector; ``Classification/evaluation/SVC_MIA.py`` of
        OPTML-Group/Unlearn-Saliency.

    Args:
        member: features of the shadow members (retain samples), ``(N,)`` or ``(N, d)``.
        non_member: features of the shadow non-members (test samples), same ``d``.
        target: features of the samples attacked (the forget set), same ``d``.
        resolution: the rounding grid (> 0) before merging, or ``None`` to merge only
            identical values.
        merge: ``False`` fits every sample as it is, unrounded and unweighted: SalUn's code,
            the reference that the merged attack is checked against.

    Returns:
        The member rate in percent, in [0, 100], or NaN.

    Raises:
        ValueError: for a ``resolution`` that is not ``None`` or a positive number.
    """
    if resolution is not None and (isinstance(resolution, bool)
                                   or not isinstance(resolution, (int, float))
                                   or not 0 < resolution < math.inf):
        raise ValueError(f"The 'resolution' parameter of svm_member_rate must be None or a "
                         f"positive number. Got {resolution!r} instead.")
    arrays = [t.detach().double().cpu().reshape(len(t), -1).numpy()
              for t in (member, non_member, target)]
    if not all(np.isfinite(a).all() for a in arrays):
        return math.nan
    labels = np.concatenate([np.ones(len(arrays[0])), np.zeros(len(arrays[1]))])
    if not merge:
        attack = SVC(C=3, gamma="auto", kernel="rbf").fit(np.concatenate(arrays[:2]), labels)
        return 100.0 * float((attack.predict(arrays[2]) == 1).mean())
    arrays = [_rounded(a, resolution) for a in arrays]
    rows, _, counts = _merge(np.concatenate([np.concatenate(arrays[:2]), labels[:, None]], axis=1))
    attack = SVC(C=3, gamma="auto", kernel="rbf")
    attack.fit(rows[:, :-1], rows[:, -1], sample_weight=counts.astype(np.float64))
    targets, inverse, _ = _merge(arrays[2])
    is_member = attack.predict(targets)[inverse] == 1
    return 100.0 * float(is_member.mean())


def mia_efficacy(member: Tensor, non_member: Tensor, target: Tensor) -> float:
    """SalUn's MIA-efficacy: the share of ``target`` predicted non-member, in percent.

    ``100 - svm_member_rate(member, non_member, target)`` (see :func:`svm_member_rate`); on
    true-label confidences it is the ``MIA`` that :func:`evaluate` reports. Any NaN gives NaN.

    References:
        SalUn (Fan et al., ICLR 2024), ``Classification/evaluation/SVC_MIA.py`` of
        OPTML-Group/Unlearn-Saliency.

    Args:
        member: features of the shadow members (retain samples), ``(N,)`` or ``(N, d)``.
        non_member: features of the shadow non-members (test samples).
        target: features of the samples attacked (the forget set).

    Returns:
        The MIA-efficacy in percent, or NaN.
    """
    return 100.0 - svm_member_rate(member, non_member, target)


# --- agreement with the retrained model --------------------------------------------------------

def rua(predictions: Tensor, reference: Tensor, labels: Tensor) -> float:
    """The authors' rUA: forget accuracy minus the retrained model's, in points.

    :math:`\\mathrm{rUA} = \\mathrm{Acc}(D_f) - \\mathrm{Acc}_{\\text{retrained}}(D_f)`, so 0
    is the retrained model's forgetting, > 0 remembers more and < 0 forgets more than it. In
    terms of SalUn's ``UA = 100 - Acc(D_f)``, it is ``UA(retrained) - UA``.

    References:
        ``evaluation/relativeUA.py`` of owl1996/UnlearningFocusVector.

    Args:
        predictions: the model's predicted labels on the forget set ``(N,)`` (:func:`predict`).
        reference: the retrained model's predicted labels on the same samples ``(N,)``.
        labels: the true labels ``(N,)``.

    Returns:
        The difference of accuracies in percentage points, in [-100, 100].

    Raises:
        ValueError: for empty or mismatched inputs.
    """
    _check_aligned("rua", predictions=predictions, reference=reference, labels=labels)
    labels = labels.cpu()
    return _percent_equal(predictions.cpu(), labels) - _percent_equal(reference.cpu(), labels)


def fidelity(predictions: Tensor, reference: Tensor) -> float:
    """The authors' FID: the share of samples on which two models predict the same label.

    With ``reference`` the retrained model's predictions on the forget set, 100 means the
    unlearned model answers there exactly as the retrained model does. A label of -1 (a sample
    with non-finite logits, see :func:`predict`) matches nothing.

    References:
        ``evaluation/relativeUA.py`` (``Fid``) of owl1996/UnlearningFocusVector.

    Args:
        predictions: the model's predicted labels ``(N,)``.
        reference: the reference model's predicted labels ``(N,)``.

    Returns:
        The agreement in percent, in [0, 100].

    Raises:
        ValueError: for empty or mismatched inputs.
    """
    _check_aligned("fidelity", predictions=predictions, reference=reference)
    predictions, reference = predictions.cpu(), reference.cpu()
    return 100.0 * ((predictions == reference) & (predictions >= 0)).double().mean().item()


def _check_aligned(caller: str, **tensors: Tensor) -> None:
    lengths = {name: len(t) for name, t in tensors.items()}
    if 0 in lengths.values() or len(set(lengths.values())) != 1:
        raise ValueError(f"The parameters of {caller} must be non-empty and of equal lengths. "
                         f"Got lengths {lengths} instead.")


# --- everything for one model ------------------------------------------------------------------

def _check_features(features: Sequence[str]) -> tuple[str, ...]:
    if isinstance(features, str) or not all(f in MIA_FEATURES for f in features):
        raise ValueError(f"The 'mia_features' parameter of evaluate must be a sequence of names "
                         f"among {list(MIA_FEATURES)}. Got {features!r} instead.")
    return tuple(dict.fromkeys(features))


def evaluate(
    model: nn.Module,
    *,
    forget: Batch,
    retain: Batch,
    test: Batch,
    batch_size: int = 512,
    mia_samples: int | None = None,
    seed: int = 0,
    reference: Tensor | None = None,
    mia_features: Sequence[str] = (),
    member_subsets: int = 0,
    fast_layout: bool = True,
) -> dict[str, Any]:
    """The metrics of one model: SalUn's four, and the authors' when asked.

    Always: ``UA = 100 - Acc(D_f)``, ``RA = Acc(D_r)``, ``TA = Acc(test)`` (pass the test set
    with the forgotten class removed for class-wise forgetting), and ``MIA``, SalUn's
    MIA-efficacy on true-label confidences (:func:`mia_efficacy`). With ``reference``, the
    retrained model's predictions on the forget set, also the authors' ``rUA`` (:func:`rua`)
    and ``FID`` (:func:`fidelity`). For each name of ``mia_features`` (:data:`MIA_FEATURES`), the
    SVM attack on that feature reported both ways: ``MIA_member_<name>`` (the authors' reading,
    the share of D_f predicted member) and ``MIA_efficacy_<name>`` (SalUn's, the share predicted
    non-member; their sum is 100). Each feature costs one SVM fit (about 10 s on 10k + 10k
    samples); the ``confidence`` fit is shared with ``MIA``. Every feature comes from one forward
    pass per set.

    The attack's members are SalUn's and the authors' choice, the first ``|test|`` samples of
    the retain set (in its given order), its non-members the test set; ``mia_samples`` caps
    both at their first ``mia_samples`` samples (the RBF SVC's cost grows quadratically). Which
    retain samples play members moves the attack on small data; ``member_subsets = K > 0`` also
    runs the attack with K other member sets (seeded random subsets of the retain set of the
    same size, seeds ``seed``, ``seed + 1``, ...) and reports, under ``"MIA_subsets"``, for each
    attacked feature the K member rates, so that a figure can carry that spread. A model with
    non-finite logits gets accuracies with those samples counted wrong, and NaN attack results;
    nothing raises.

    References:
        SalUn (Fan et al., ICLR 2024) for UA, RA, TA and MIA-efficacy; the authors' code
        (``evaluation/relativeUA.py``, ``evaluation/SVC_MIA.py`` of
        owl1996/UnlearningFocusVector) for rUA, FID and the member rates.

    Args:
        model: the classifier; its mode is restored.
        forget: the forget set ``(x, y)``.
        retain: the retain set ``(x, y)``.
        test: the test set ``(x, y)``.
        batch_size: samples per forward pass, >= 1.
        mia_samples: at most this many members and as many non-members (>= 2), or ``None``.
        seed: seeds the random member sets of ``member_subsets``, >= 0.
        reference: the retrained model's predicted labels on the forget set (:func:`predict`),
            or ``None`` for no ``rUA`` and ``FID``.
        mia_features: names among :data:`MIA_FEATURES` to attack and report both ways.
        member_subsets: how many other member sets to attack with (>= 0).
        fast_layout: on the CPU, run the forward passes with convolution weights in
            channels-last layout (faster; logits equal to float rounding), then restore them.

    Returns:
        ``{"UA", "RA", "TA", "MIA"}``, then ``"rUA"`` and ``"FID"`` and the per-feature rates
        when asked, all in percent (``rUA`` in points); with ``member_subsets``,
        ``"MIA_subsets"``: ``{feature: [member rate, ...]}`` for ``confidence`` and each of
        ``mia_features`` (SalUn's ``MIA`` is ``100 -`` the confidence rate).

    Raises:
        ValueError: for an empty set, a bad batch size, ``mia_samples``, seed, ``reference`` or
            feature name.
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
    if reference is not None and (not isinstance(reference, Tensor)
                                  or reference.shape != forget[1].shape):
        raise ValueError(f"The 'reference' parameter of evaluate must be None or the retrained "
                         f"model's predicted labels on the forget set, of shape "
                         f"{tuple(forget[1].shape)}. Got {reference!r} instead.")
    if isinstance(member_subsets, bool) or not isinstance(member_subsets, int) \
            or member_subsets < 0:
        raise ValueError(f"The 'member_subsets' parameter of evaluate must be an int >= 0. "
                         f"Got {member_subsets!r} instead.")
    features = _check_features(mia_features)
    attacked = tuple(dict.fromkeys(("confidence",) + features))
    out_f, out_r, out_t = (_outputs(model, x, batch_size, fast_layout)
                           for x, _ in (forget, retain, test))
    y_f, y_r, y_t = (batch[1].cpu() for batch in (forget, retain, test))
    n_shadow = min(len(y_t), len(y_r), mia_samples or len(y_t))
    retain_features = attack_features(out_r.probs, y_r)
    non_member = {k: v[:n_shadow] for k, v in attack_features(out_t.probs, y_t).items()}
    target = attack_features(out_f.probs, y_f)

    def rates(members: Tensor | slice) -> dict[str, float]:
        return {name: svm_member_rate(retain_features[name][members], non_member[name],
                                      target[name]) for name in attacked}

    member_rates = rates(slice(0, n_shadow))
    metrics = {
        "UA": 100.0 - _percent_equal(out_f.predictions, y_f),
        "RA": _percent_equal(out_r.predictions, y_r),
        "TA": _percent_equal(out_t.predictions, y_t),
        "MIA": 100.0 - member_rates["confidence"],
    }
    if reference is not None:
        metrics["rUA"] = rua(out_f.predictions, reference, y_f)
        metrics["FID"] = fidelity(out_f.predictions, reference)
    for name in features:
        metrics[f"MIA_member_{name}"] = member_rates[name]
        metrics[f"MIA_efficacy_{name}"] = 100.0 - member_rates[name]
    if member_subsets:
        draws = [rates(torch.randperm(len(y_r), generator=torch.Generator().manual_seed(
            seed + k))[:n_shadow]) for k in range(member_subsets)]
        metrics["MIA_subsets"] = {name: [draw[name] for draw in draws] for name in attacked}
    return metrics


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


def ua_ratio(ua: float, ua_retrain: float) -> float:
    """The ratio ``UA / UA_retrain`` (1: the retrained model's forgetting).

    This project's summary, not the authors' rUA (a difference of forget accuracies, see
    :func:`rua`); records store it as ``ua_ratio``.

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
            raise ValueError(f"The '{name}' parameter of ua_ratio must be >= 0. "
                             f"Got {value!r} instead.")
    if math.isnan(ua) or math.isnan(ua_retrain) or ua_retrain == 0:
        return math.nan
    return float(ua) / float(ua_retrain)


def epochs_to_reach(ua_per_epoch: Sequence[float], target: float, tol: float = 1.0) -> int | None:
    """The first epoch whose UA is within ``tol`` points of ``target``.

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
