"""Original and retrained models: one training recipe, checkpoints cached by their inputs' hash."""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from feasible._validate import is_int, is_real, names
from feasible.paths import cache_dir

#: Learning-rate schedules, by name (see :func:`learning_rate`).
SCHEDULES: tuple[str, ...] = ("onecycle", "cosine", "multistep", "constant")


@dataclass(frozen=True)
class TrainConfig:
    """The recipe that trains the original model on D and the retrained model on D_r.

    SGD with momentum and weight decay over shuffled mini-batches of the training indices, the
    learning rate set per step by ``schedule``. The same recipe, seed included, trains both models.

    Args:
        model: a name in ``feasible.models.MODELS``.
        width: the model's width (``None``: the architecture's default).
        epochs: passes over the training indices, ``>= 1``.
        lr: the peak learning rate, ``> 0``.
        momentum: SGD momentum in ``[0, 1)``.
        weight_decay: L2 weight decay, ``>= 0``.
        batch_size: images per step, ``>= 1``.
        schedule: one of ``SCHEDULES``; see :func:`learning_rate`.
        warmup_fraction: share of all steps spent warming up linearly from 0 (``onecycle`` and
            ``cosine``), in ``[0, 1)``.
        augment: apply the dataset's augmentation policy (``feasible.data.AUGMENTATION``).
        seed: seeds the initial weights, the shuffling and the augmentation.

    Raises:
        ValueError: a field outside its allowed values (the message names field, value and range).
    """

    model: str
    width: int | None = None
    epochs: int = 30           # our choice per scale (see feasible.experiment.SCALES); SalUn: 182
    lr: float = 0.1            # SalUn's main_train.py: SGD lr 0.1
    momentum: float = 0.9      # SalUn's protocol
    weight_decay: float = 5e-4  # SalUn's protocol
    batch_size: int = 256      # SalUn's protocol
    schedule: str = "onecycle"  # ours: a short warm-up/decay cycle, not SalUn's 182 epochs
    warmup_fraction: float = 0.15  # ours (airbench-style triangle); unused by multistep/constant
    augment: bool = True       # SalUn protocol: crop+flip for CIFAR-10, none for SVHN/digits
    seed: int = 0

    def __post_init__(self) -> None:
        from feasible.models import MODELS

        if self.model not in MODELS:
            raise ValueError(_unknown("model", self.model, MODELS))
        if self.width is not None and (not is_int(self.width) or self.width < 1):
            raise ValueError(_bad("width", self.width, "None or an int >= 1"))
        if not is_int(self.epochs) or self.epochs < 1:
            raise ValueError(_bad("epochs", self.epochs, "an int >= 1"))
        if not is_real(self.lr) or not self.lr > 0:
            raise ValueError(_bad("lr", self.lr, "a float > 0"))
        if not is_real(self.momentum) or not 0 <= self.momentum < 1:
            raise ValueError(_bad("momentum", self.momentum, "a float in [0, 1)"))
        if not is_real(self.weight_decay) or not self.weight_decay >= 0:
            raise ValueError(_bad("weight_decay", self.weight_decay, "a float >= 0"))
        if not is_int(self.batch_size) or self.batch_size < 1:
            raise ValueError(_bad("batch_size", self.batch_size, "an int >= 1"))
        if self.schedule not in SCHEDULES:
            raise ValueError(_unknown("schedule", self.schedule, SCHEDULES))
        if not is_real(self.warmup_fraction) or not 0 <= self.warmup_fraction < 1:
            raise ValueError(_bad("warmup_fraction", self.warmup_fraction, "a float in [0, 1)"))
        if not isinstance(self.augment, bool):
            raise ValueError(_bad("augment", self.augment, "a bool"))
        if not is_int(self.seed) or self.seed < 0:
            raise ValueError(_bad("seed", self.seed, "an int >= 0"))


def learning_rate(cfg: TrainConfig, step: int, total_steps: int) -> float:
    """The learning rate of step ``step`` (0-based) out of ``total_steps``.

    ``onecycle``: linear warm-up from 0 to ``lr`` over the first ``warmup_fraction`` of the steps,
    then linear decay to 0 (the triangle of airbench). ``cosine``: the same warm-up, then a
    half-cosine decay to 0. ``multistep``: SalUn's schedule, ``lr`` times 0.1 after half of the
    epochs and 0.01 after three quarters (91 and 136 of 182). ``constant``: ``lr``.

    Args:
        cfg: the recipe.
        step: the step index, in ``[0, total_steps)``.
        total_steps: all steps of the run, ``>= 1``.

    Returns:
        The learning rate, ``>= 0``.
    """
    t = (step + 1) / total_steps
    warm = cfg.warmup_fraction
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "multistep":
        return cfg.lr * (1.0 if t <= 0.5 else 0.1 if t <= 0.75 else 0.01)
    if t <= warm:
        return cfg.lr * t / warm
    rest = (t - warm) / (1 - warm)
    if cfg.schedule == "onecycle":
        return cfg.lr * (1 - rest)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * rest))


def indices_hash(idx: torch.Tensor) -> str:
    """A sha256 prefix (16 hex digits) of an int64 index tensor, order included."""
    data = idx.detach().to("cpu", torch.int64).contiguous().numpy().tobytes()
    return hashlib.sha256(data).hexdigest()[:16]


def data_fingerprint(data: Any) -> str:
    """A sha256 prefix of the training images and labels of an ``ImageData``.

    It changes with anything that changes the training set: the copy of the dataset, the
    ``train_subset``, the validation split and its seed.
    """
    h = hashlib.sha256()
    for t in (data.x_train, data.y_train):
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def checkpoint_key(data: Any, idx: torch.Tensor, cfg: TrainConfig, *,
                   fingerprint: str | None = None) -> str:
    """The hash of everything that determines a trained model's weights.

    Args:
        data: the ``ImageData`` trained on.
        idx: the training indices into ``data.x_train``.
        cfg: the recipe.
        fingerprint: ``data_fingerprint(data)`` when already computed.

    Returns:
        24 hex digits of the sha256 of the canonical JSON of recipe, dataset and indices.
    """
    content = {
        "train": asdict(cfg),
        "dataset": data.name,
        "source": data.source,
        "data": fingerprint or data_fingerprint(data),
        "indices": indices_hash(idx),
    }
    text = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def new_model(data: Any, cfg: TrainConfig) -> nn.Module:
    """A freshly initialised model for ``data``, seeded by ``cfg.seed``."""
    from feasible.models import build_model

    torch.manual_seed(cfg.seed)
    return build_model(cfg.model, in_channels=data.channels, num_classes=data.num_classes,
                       image_size=data.image_size, mean=data.mean, std=data.std, width=cfg.width)


def train(data: Any, idx: torch.Tensor, cfg: TrainConfig, *,
          device: str | torch.device = "cpu", on_epoch: Callable[[int], Any] | None = None,
          ) -> tuple[nn.Module, dict[str, Any]]:
    """Train a model from scratch on ``data.x_train[idx]`` with the recipe ``cfg``.

    Everything random (initial weights, shuffling, augmentation) follows ``cfg.seed``.

    Args:
        data: an ``ImageData`` (``feasible.data.load``).
        idx: int64 indices into ``data.x_train``, non-empty.
        cfg: the recipe.
        device: where to train.
        on_epoch: called as ``on_epoch(epoch)`` (1-based) after each epoch, e.g. to report
            progress; it does not touch the training.

    Returns:
        The model in eval mode on ``device``, and an info dict: ``train_accuracy`` (percent, on the
        un-augmented training images), ``test_accuracy`` (percent, the full test set), ``memorised``
        (train accuracy >= 99: the model fits its forget set), ``epochs``, ``n_train``,
        ``final_loss`` (mean loss of the last epoch) and ``time_s``.

    Raises:
        ValueError: ``idx`` empty or out of range.
    """
    from feasible.data import AUGMENTATION, augment, batches
    from feasible.metrics import accuracy

    idx = torch.as_tensor(idx, dtype=torch.int64)
    n_all = len(data.x_train)
    if idx.ndim != 1 or len(idx) == 0 or int(idx.min()) < 0 or int(idx.max()) >= n_all:
        raise ValueError(f"The 'idx' parameter of train must be a non-empty 1-d tensor of "
                         f"indices in [0, {n_all}). Got shape {tuple(idx.shape)} instead.")
    device = torch.device(device)
    start = time.perf_counter()
    model = new_model(data, cfg).to(device)
    x = data.x_train[idx].to(device)
    y = data.y_train[idx].to(device)
    policy = AUGMENTATION.get(data.name, "none") if cfg.augment else "none"
    gen = torch.Generator().manual_seed(cfg.seed)
    # SGD with decoupled-from-nothing L2 decay, as torch.optim.SGD (SalUn's optimiser).
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay)
    n = len(idx)
    drop_last = n > cfg.batch_size  # no size-1 tail batch (BatchNorm) unless the set is one batch
    per_epoch = n // cfg.batch_size if drop_last else math.ceil(n / cfg.batch_size)
    total = per_epoch * cfg.epochs
    step, loss_sum, loss_count = 0, 0.0, 0
    model.train()
    for epoch in range(1, cfg.epochs + 1):
        loss_sum, loss_count = 0.0, 0
        for b in batches(n, cfg.batch_size, gen, shuffle=True, drop_last=drop_last):
            b = b.to(device)
            xb = augment(x[b], policy, gen) if policy != "none" else x[b]
            for group in opt.param_groups:
                group["lr"] = learning_rate(cfg, step, total)
            loss = F.cross_entropy(model(xb), y[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            loss_sum += float(loss.detach()) * len(b)
            loss_count += len(b)
        if on_epoch is not None:
            on_epoch(epoch)
    model.eval()
    train_acc = accuracy(model, x, y)
    test_acc = accuracy(model, data.x_test.to(device), data.y_test.to(device))
    model.eval()
    info = {
        "train_accuracy": train_acc,
        "test_accuracy": test_acc,
        "memorised": bool(train_acc >= 99.0),
        "epochs": cfg.epochs,
        "n_train": n,
        "final_loss": loss_sum / max(loss_count, 1),
        "time_s": time.perf_counter() - start,
    }
    if not info["memorised"]:
        warnings.warn(f"The {cfg.model} trained on {n} images of {data.name} reached a training "
                      f"accuracy of {train_acc:.2f}% < 99%: it did not memorise its training "
                      f"set, so unlearning it has less to undo; train longer.", stacklevel=2)
    return model, info


#: Training samples whose logits a checkpoint stores, to check the weights it loads.
CHECK_SAMPLES: int = 64
#: Of those samples, how many may change predicted label on reload (near-ties on another CPU).
CHECK_LABEL_SLACK: int = 2
#: How far a reloaded logit may move, as a share of the largest stored logit (at least 1), loose
#: enough for another CPU's or GPU's arithmetic (TF32 included), far below what other weights give.
CHECK_LOGIT_TOLERANCE: float = 0.1


def checkpoint_path(key: str) -> Path:
    """Where the checkpoint with hash ``key`` lives: ``cache_dir()/checkpoints/<key>.pt``."""
    return cache_dir() / "checkpoints" / f"{key}.pt"


def _load_checkpoint(path: Path, key: str, model: nn.Module) -> dict[str, Any] | None:
    """The stored blob if ``path`` holds a checkpoint for ``key``, loaded into ``model``."""
    if not path.exists():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: retrain rather than trust it
        warnings.warn(f"Checkpoint {path} is unreadable ({type(err).__name__}: {err}); retraining "
                      f"and overwriting it.", stacklevel=3)
        return None
    if not isinstance(blob, dict) or blob.get("key") != key:
        stored = blob.get("key") if isinstance(blob, dict) else None
        warnings.warn(f"Checkpoint {path} has hash {stored!r}, expected {key!r}; retraining and "
                      f"overwriting it.", stacklevel=3)
        return None
    state = blob.get("state_dict", {})
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()} if isinstance(state, dict) else {}
    if expected != found:
        diff = sorted(set(expected.items()) ^ set(found.items()))[:3]
        warnings.warn(f"Checkpoint {path} does not match the model's parameters (e.g. {diff}); "
                      f"retraining and overwriting it.", stacklevel=3)
        return None
    model.load_state_dict(state)
    return blob


def prediction_check(model: nn.Module, data: Any, idx: torch.Tensor) -> dict[str, torch.Tensor]:
    """What a checkpoint stores to check its weights when loaded: logits on a few fixed samples.

    Args:
        model: the trained model (its device is used).
        data: the ``ImageData`` it was trained on.
        idx: its training indices; :data:`CHECK_SAMPLES` of them, evenly spread, are used.

    Returns:
        ``{"indices": int64 (n,), "logits": float32 (n, classes)}``, on the CPU.
    """
    idx = torch.as_tensor(idx, dtype=torch.int64)
    n = min(CHECK_SAMPLES, len(idx))
    picks = idx[torch.linspace(0, len(idx) - 1, n).round().long()]
    return {"indices": picks, "logits": _logits(model, data.x_train[picks])}


def check_problem(model: nn.Module, data: Any, check: Any) -> str | None:
    """Why ``model`` fails the stored :func:`prediction_check`, or ``None`` when it passes.

    It passes when at most :data:`CHECK_LABEL_SLACK` samples change predicted label and no
    logit moves by more than :data:`CHECK_LOGIT_TOLERANCE` times the largest stored logit (at
    least 1).
    """
    try:
        picks, stored = check["indices"], check["logits"].float()
        logits = _logits(model, data.x_train[picks])
        if logits.shape != stored.shape:
            return f"it gives logits of shape {tuple(logits.shape)}, {tuple(stored.shape)} stored"
        changed = int((logits.argmax(1) != stored.argmax(1)).sum())
        moved = float((logits - stored).abs().max().nan_to_num(math.inf))
        allowed = CHECK_LOGIT_TOLERANCE * max(1.0, float(stored.abs().max()))
    except (AttributeError, KeyError, TypeError, IndexError, RuntimeError) as err:
        return f"its stored check is unusable ({type(err).__name__}: {err})"
    if changed > CHECK_LABEL_SLACK or not moved <= allowed:
        return (f"its predictions on {len(picks)} training samples differ from those stored with "
                f"it ({changed} labels changed, allowed {CHECK_LABEL_SLACK}; logits moved by up "
                f"to {moved:.3g}, allowed {allowed:.3g})")
    return None


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        return model(x.to(device)).float().cpu()


def cached_train(data: Any, idx: torch.Tensor, cfg: TrainConfig, *,
                 device: str | torch.device = "cpu", fingerprint: str | None = None,
                 on_epoch: Callable[[int], Any] | None = None,
                 ) -> tuple[nn.Module, dict[str, Any]]:
    """:func:`train`, through the checkpoint cache.

    A checkpoint is used only when its stored hash equals :func:`checkpoint_key`, every
    parameter shape matches, and the loaded model still gives the logits stored with it on a few
    training samples (:func:`prediction_check`, within the tolerance of :func:`check_problem`);
    otherwise (missing, unreadable, mismatched, failing its check) the model is trained and the
    checkpoint written atomically, with a warning naming a rejected file. A checkpoint written
    before the stored check existed has none: it is used on its hash and shapes alone, as then
    (delete ``cache_dir()/checkpoints`` to rebuild every checkpoint with its check). A checkpoint
    that cannot be written (a full or read-only cache) is a warning: the trained model is used.

    Args:
        data: an ``ImageData``.
        idx: the training indices.
        cfg: the recipe.
        device: where to train and where the model is returned.
        fingerprint: ``data_fingerprint(data)`` when already computed.
        on_epoch: passed to :func:`train` when the model is trained (not called when it is
            loaded).

    Returns:
        The model (eval mode) and its info (that of :func:`train`, plus ``cached``, ``key`` and
        ``checkpoint``).
    """
    key = checkpoint_key(data, idx, cfg, fingerprint=fingerprint)
    path = checkpoint_path(key)
    model = new_model(data, cfg)
    start = time.perf_counter()
    blob = _load_checkpoint(path, key, model)
    if blob is not None:
        model = model.to(device).eval()
        problem = check_problem(model, data, blob["check"]) if "check" in blob else None
        if problem is not None:
            warnings.warn(f"Checkpoint {path} fails its check: {problem}; retraining and "
                          f"overwriting it.", stacklevel=2)
            blob = None
    if blob is not None:
        info = dict(blob.get("info", {}), cached=True, load_time_s=time.perf_counter() - start)
    else:
        model, info = train(data, idx, cfg, device=device, on_epoch=on_epoch)
        _save_checkpoint(path, {"key": key, "info": info,
                                "state_dict": {k: v.detach().to("cpu")
                                               for k, v in model.state_dict().items()},
                                "check": prediction_check(model, data, idx)})
        info = dict(info, cached=False)
    info.update(key=key, checkpoint=str(path))
    return model, info


def _save_checkpoint(path: Path, blob: dict[str, Any]) -> None:
    """Write ``blob`` to ``path`` atomically; a failure is a warning, not an error."""
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(blob, tmp)
        os.replace(tmp, path)
    except OSError as err:
        warnings.warn(f"Could not write the checkpoint {path} ({type(err).__name__}: {err}); "
                      f"the model is used but will be trained again next time.", stacklevel=3)
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


def original_and_retrained(data: Any, split: Any, cfg: TrainConfig, *,
                           device: str | torch.device = "cpu",
                           ) -> tuple[nn.Module, nn.Module, dict[str, Any]]:
    """The original model (trained on all of D) and the retrained model (on D_r), same recipe.

    Args:
        data: an ``ImageData``.
        split: a ``ForgetSplit`` of ``data`` (its ``retain_idx`` is D_r).
        cfg: the recipe, seed included, shared by both models.
        device: where to train.

    Returns:
        ``(original, retrained, info)`` with ``info = {"original": ..., "retrained": ...}``, the
        info dicts of :func:`cached_train`.

    Each model is a phase of ``feasible.progress`` (``train original``, ``train retrained``: one
    step per epoch, or ``loaded from the cache``), silent unless progress is on.
    """
    from feasible import progress

    fingerprint = data_fingerprint(data)
    everything = torch.arange(len(data.x_train), dtype=torch.int64)
    models, infos = {}, {}
    for name, idx in (("original", everything), ("retrained", split.retain_idx)):
        with progress.phase(f"train {name}", total=cfg.epochs) as step:
            models[name], infos[name] = cached_train(
                data, idx, cfg, device=device, fingerprint=fingerprint,
                on_epoch=lambda epoch, step=step: step.advance())
            if infos[name]["cached"]:
                step.note = "loaded from the cache"
    return models["original"], models["retrained"], infos


def _bad(field: str, value: Any, allowed: str) -> str:
    return f"The '{field}' parameter of TrainConfig must be {allowed}. Got {value!r} instead."


def _unknown(field: str, value: Any, allowed: tuple[str, ...]) -> str:
    return f"Unknown {field} {value!r} for TrainConfig; expected one of {names(allowed)}."
