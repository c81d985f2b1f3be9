"""One configuration in, one result record out: scales, configurations, hashes and records."""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import platform
import subprocess
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import torch

from feasible._validate import is_int, is_real, names
from feasible.paths import ROOT, results_dir
from feasible.train import TrainConfig, original_and_retrained
from feasible.unlearn import UnlearnConfig, relevant_fields, unlearn

#: The forgetting scenarios (``feasible.data.forget_split``).
SCENARIOS: tuple[str, ...] = ("random", "class")
#: Classes per dataset, to validate ``forget_class`` before any data is loaded.
NUM_CLASSES: dict[str, int] = {"cifar10": 10, "svhn": 10, "fashion_mnist": 10, "digits": 10}


@dataclass(frozen=True)
class Scale:
    """A preset: which data and models a scale uses and how it trains them.

    Attributes:
        name: the scale's name, a key of :data:`SCALES`.
        description: one line for ``python -m feasible list``.
        datasets: the scale's datasets; the first is the default.
        models: the scale's models; the first is the default.
        train_subset: per dataset, the size of the stratified training subset (absent: all).
        recipes: the training recipe per ``"dataset/model"`` or, failing that, per ``"model"``;
            its seed is replaced by the run's seed.
        mia_samples: caps the members and the non-members of the MIA's SVM (``None``: SalUn's
            protocol, every test sample and as many retain samples).
    """

    name: str
    description: str
    datasets: tuple[str, ...]
    models: tuple[str, ...]
    train_subset: Mapping[str, int]
    recipes: Mapping[str, TrainConfig]
    mia_samples: int | None = None

    def recipe(self, dataset: str, model: str, seed: int) -> TrainConfig:
        """The training recipe of ``model`` on ``dataset`` at this scale, with ``seed``.

        Raises:
            ValueError: the scale has no recipe for that model.
        """
        cfg = self.recipes.get(f"{dataset}/{model}", self.recipes.get(model))
        if cfg is None:
            raise ValueError(f"Scale {self.name!r} has no training recipe for model {model!r}; "
                             f"pass Config(train=TrainConfig(...)) explicitly.")
        return dataclasses.replace(cfg, seed=seed)


def _recipes(**kwargs: TrainConfig) -> dict[str, TrainConfig]:
    return {key.replace("__", "/"): value for key, value in kwargs.items()}


# Recipes. Every one trains until the original model memorises its training set (train accuracy
# >= 99%, DESIGN.md); the measured accuracies are in the README and the records.
#: The scales by name (DESIGN.md), one parameter for the same code.
SCALES: dict[str, Scale] = {
    "smoke": Scale(
        name="smoke",
        description="digits (scikit-learn, 8x8) and an MLP: the whole pipeline in seconds",
        datasets=("digits",), models=("mlp", "small_cnn"), train_subset={},
        recipes=_recipes(
            # ours: 1213 images, 30 epochs of batch 64 memorise them in about a second
            mlp=TrainConfig("mlp", epochs=30, lr=0.1, batch_size=64, augment=False),
            small_cnn=TrainConfig("small_cnn", epochs=30, lr=0.05, batch_size=64, augment=False),
            resnet18=TrainConfig("resnet18", width=8, epochs=20, lr=0.05, batch_size=64,
                                 augment=False),
            vgg16_bn=TrainConfig("vgg16_bn", width=8, epochs=20, lr=0.05, batch_size=64,
                                 augment=False),
        ),
    ),
    "cpu": Scale(
        name="cpu",
        description="Fashion-MNIST (20k subset), small CNN; CIFAR-10 (10k subset): a 2-core CPU",
        datasets=("fashion_mnist", "cifar10"), models=("small_cnn", "resnet18"),
        # ours: a subset small enough to memorise quickly, so UA(original) and UA(retrain) differ
        train_subset={"fashion_mnist": 20000, "cifar10": 10000},
        # SalUn's full MIA protocol (an SVM on 10k + 10k samples, ~10 s per evaluation here): a
        # 2k + 2k cap was tried and moved SRL's MIA-efficacy from 36 to 55, too noisy to compare
        mia_samples=None,
        recipes=_recipes(
            # ours, measured: see README (memorises the 18k training images, test >= 88%)
            small_cnn=TrainConfig("small_cnn", epochs=20, lr=0.05, batch_size=128, augment=False),
            # ours, not tuned: a narrow ResNet18 (width 16) without augmentation so it memorises
            resnet18=TrainConfig("resnet18", width=16, epochs=15, lr=0.05, batch_size=128,
                                 augment=False),
            vgg16_bn=TrainConfig("vgg16_bn", width=16, epochs=15, lr=0.05, batch_size=128,
                                 augment=False),
            mlp=TrainConfig("mlp", epochs=30, lr=0.05, batch_size=128, augment=False),
        ),
    ),
    "paper": Scale(
        name="paper",
        description="CIFAR-10 and SVHN, full data, ResNet18 and VGG16-BN, SalUn's protocol (GPU)",
        datasets=("cifar10", "svhn"), models=("resnet18", "vgg16_bn"), train_subset={},
        recipes=_recipes(
            # SalUn: SGD lr 0.1, momentum 0.9, wd 5e-4, batch 256, crop+flip on CIFAR-10; ours: a
            # 60-epoch one-cycle schedule instead of 182 epochs with steps at 91 and 136 (use
            # TrainConfig(schedule="multistep", epochs=182) for SalUn's exact schedule)
            resnet18=TrainConfig("resnet18", epochs=60, lr=0.1, batch_size=256),
            vgg16_bn=TrainConfig("vgg16_bn", epochs=60, lr=0.1, batch_size=256),
            small_cnn=TrainConfig("small_cnn", epochs=60, lr=0.05, batch_size=256),
            mlp=TrainConfig("mlp", epochs=60, lr=0.05, batch_size=256),
        ),
    ),
}

#: The unlearning fields of :class:`Config`: those of ``feasible.unlearn.UnlearnConfig``.
UNLEARN_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(UnlearnConfig))


@dataclass(frozen=True, kw_only=True)
class Config(UnlearnConfig):
    """One experiment: data, forgetting scenario, original-model recipe and unlearning run.

    Frozen and validated when built; nothing changes it afterwards, so the stored configuration
    is the one that ran. ``dataset`` and ``model`` left as ``None`` take the scale's defaults,
    and ``forget_fraction`` left as ``None`` takes 0.1 for the random scenario (both resolved at
    construction). The unlearning fields (``method``, ``addon``, ``lr``, ...) are inherited from
    ``feasible.unlearn.UnlearnConfig``, with its defaults and its validation.

    Args:
        method: a base method, a key of ``feasible.methods.METHODS``.
        addon: an add-on, a key of ``feasible.masks.ADDONS``.
        dataset: a name in ``feasible.data.DATASETS`` (``None``: the scale's first).
        model: a name in ``feasible.models.MODELS`` (``None``: the scale's first).
        scenario: ``"random"`` (with ``forget_fraction``) or ``"class"`` (with ``forget_class``).
        forget_fraction: the forgotten share of the training set, in ``(0, 1)``.
        forget_class: the forgotten class index.
        scale: a key of :data:`SCALES`.
        seed: seeds the forget split, the original and retrained models (unless ``train`` sets
            its own seed) and the unlearning.
        data_root: where to look for the dataset files first (not part of the hash).
        train: the training recipe (``None``: the scale's recipe for the model, with ``seed``).

    Raises:
        ValueError: a field outside its allowed values, or an inconsistent combination; the
            message names the field, the value and what is allowed.
    """

    dataset: str | None = None
    model: str | None = None
    scenario: str = "random"
    forget_fraction: float | None = None
    forget_class: int | None = None
    scale: str = "cpu"
    data_root: str | None = None
    train: TrainConfig | None = None

    def __post_init__(self) -> None:
        from feasible.data import DATASETS
        from feasible.models import MODELS

        if self.scale not in SCALES:
            raise ValueError(_unknown("scale", self.scale, SCALES))
        scale = SCALES[self.scale]
        # Resolve the scale's defaults once, here: the object is never changed after this.
        if self.dataset is None:
            object.__setattr__(self, "dataset", scale.datasets[0])
        if self.model is None:
            object.__setattr__(self, "model", scale.models[0])
        if self.dataset not in DATASETS:
            raise ValueError(_unknown("dataset", self.dataset, DATASETS))
        if self.model not in MODELS:
            raise ValueError(_unknown("model", self.model, MODELS))
        if self.scenario not in SCENARIOS:
            raise ValueError(_unknown("scenario", self.scenario, SCENARIOS))
        if self.scenario == "random":
            if self.forget_class is not None:
                raise ValueError(_bad("forget_class", self.forget_class,
                                      "None for scenario 'random' (set forget_fraction)"))
            if self.forget_fraction is None:
                object.__setattr__(self, "forget_fraction", 0.1)
            fraction = self.forget_fraction
            if not is_real(fraction) or not 0 < fraction < 1:
                raise ValueError(_bad("forget_fraction", fraction,
                                      "a float in the open interval (0, 1) for scenario 'random'"))
        else:
            if self.forget_fraction is not None:
                raise ValueError(_bad("forget_fraction", self.forget_fraction,
                                      "None for scenario 'class' (set forget_class)"))
            n = NUM_CLASSES[self.dataset]
            if not is_int(self.forget_class) or not 0 <= self.forget_class < n:
                raise ValueError(_bad("forget_class", self.forget_class,
                                      f"an int in [0, {n}) for scenario 'class' on {self.dataset}"))
        if self.data_root is not None and not isinstance(self.data_root, str):
            raise ValueError(_bad("data_root", self.data_root, "None or a path as a str"))
        if self.train is not None:
            if not isinstance(self.train, TrainConfig):
                raise ValueError(_bad("train", self.train, "None or a feasible.train.TrainConfig"))
            if self.train.model != self.model:
                raise ValueError(_bad("train", f"TrainConfig(model={self.train.model!r})",
                                      f"a recipe for the configuration's model {self.model!r}"))
        super().__post_init__()  # validates every unlearning field

    def unlearn_config(self) -> UnlearnConfig:
        """The ``feasible.unlearn.UnlearnConfig`` part of this configuration."""
        return UnlearnConfig(**{name: getattr(self, name) for name in UNLEARN_FIELDS})

    def train_config(self) -> TrainConfig:
        """The recipe of the original and retrained models: ``train``, or the scale's preset."""
        if self.train is not None:
            return self.train
        return SCALES[self.scale].recipe(self.dataset, self.model, self.seed)

    def to_dict(self) -> dict[str, Any]:
        """Every field, ``train`` as a dict (or ``None``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "Config":
        """The inverse of :meth:`to_dict`.

        Raises:
            ValueError: an unknown field name, or any value :class:`Config` refuses.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown Config field {unknown[0]!r}; expected one of "
                             f"{', '.join(repr(n) for n in sorted(known))}.")
        values = dict(values)
        if isinstance(values.get("train"), Mapping):
            values["train"] = TrainConfig(**values["train"])
        return cls(**values)


def hashed_fields(config: Config) -> dict[str, Any]:
    """The fields that determine a run's result, as a canonical dict.

    The unlearning fields are those ``feasible.unlearn.relevant_fields`` keeps: it drops what the
    method and add-on do not read (e.g. ``p`` for add-on ``"none"``, ``ngplus_a`` for methods
    other than NGPlus, STYLE.md §4) and resolves ``alpha``, ``beta`` and ``lr`` left as ``None``
    to the values in force. ``train`` is replaced by the resolved recipe, and ``data_root`` (a
    location, not a value: the record names the copy of the data used) is left out.

    Args:
        config: the configuration.

    Returns:
        A JSON-serialisable dict.
    """
    values = {k: v for k, v in config.to_dict().items()
              if k not in UNLEARN_FIELDS and k not in ("data_root", "train")}
    values["train"] = asdict(config.train_config())
    values["unlearn"] = relevant_fields(config.unlearn_config())
    return values


def config_hash(config: Config) -> str:
    """The sha256 prefix (16 hex digits) of the canonical JSON of :func:`hashed_fields`."""
    text = json.dumps(hashed_fields(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def record_path(config: Config) -> Path:
    """Where the record of ``config`` lives: ``results_dir()/<scale>/<hash>.json``."""
    return results_dir() / config.scale / f"{config_hash(config)}.json"


def environment(device: torch.device) -> dict[str, Any]:
    """Torch and Python versions, the device, the thread count and the git commit."""
    commit, dirty = None, None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
        if commit:
            dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "feasible"], cwd=ROOT,
                                   capture_output=True, timeout=10).returncode != 0
    except (OSError, subprocess.SubprocessError):
        pass
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine()
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "device_name": name,
        "threads": torch.get_num_threads(),
        "git_commit": commit,
        "git_dirty": dirty,  # uncommitted changes under feasible/
    }


def run(config: Config, *, device: str | torch.device | None = None, force: bool = False,
        ) -> dict[str, Any]:
    """Run one configuration and return its result record.

    Loads the data, splits off the forget set, trains (or loads) the original and retrained
    models, measures both, unlearns from a copy of the original with per-epoch metrics, and
    writes the record atomically to :func:`record_path`. An existing record is returned as it is,
    without recomputing, unless ``force``.

    The record: ``config``, ``hash``, ``train_config``, ``environment``, ``data`` (source, sizes,
    forget size, ``indices_hash``), ``original`` and ``retrained`` (``metrics`` UA/RA/TA/MIA and
    ``train`` info), ``ua_gap_original_retrained`` (UA(retrained) - UA(original),
    signed; the original's ``avg_gap`` is the Avg. Gap of doing nothing),
    ``epochs`` (per epoch: the loop's record, UA/RA/TA/MIA, ``gap_*`` to the retrained model,
    ``avg_gap``, ``relative_ua``), ``final`` (the same after the last epoch, plus
    ``epochs_to_reach_retrain_ua``), ``diverged_epoch`` and ``timings`` (seconds). NaN and
    infinities are stored as ``null``. Everything but ``timings`` and the per-epoch
    ``wall_time`` is a function of the configuration and the machine.

    Args:
        config: the configuration.
        device: where to compute (``None``: CUDA when available, else the CPU).
        force: recompute and overwrite an existing record.

    Returns:
        The record, as stored (JSON types).

    Raises:
        FileNotFoundError: the dataset is not available (the message says how to get it).
    """
    from feasible.data import AUGMENTATION, forget_split, load
    from feasible.methods import METHODS
    from feasible.metrics import epochs_to_reach, evaluate, gaps, relative_ua

    path = record_path(config)
    if path.exists() and not force:
        return json.loads(path.read_text())
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    torch.manual_seed(config.seed)

    scale = SCALES[config.scale]
    subset = scale.train_subset.get(config.dataset)
    data = load(config.dataset, root=config.data_root, train_subset=subset)
    split = forget_split(data, config.scenario, fraction=config.forget_fraction,
                         cls=config.forget_class, seed=config.seed)
    timings["data_s"] = time.perf_counter() - clock

    train_cfg = config.train_config()
    original, retrained, train_info = original_and_retrained(data, split, train_cfg,
                                                             device=device)
    for name in ("original", "retrained"):  # this run's seconds: training, or loading
        info = train_info[name]
        timings[f"train_{name}_s"] = info["load_time_s"] if info["cached"] else info["time_s"]
        timings[f"train_{name}_cached"] = info["cached"]
        timings[f"train_{name}_trained_in_s"] = info["time_s"]  # when the checkpoint was made

    forget = (data.x_train[split.forget_idx].to(device), data.y_train[split.forget_idx].to(device))
    retain = (data.x_train[split.retain_idx].to(device), data.y_train[split.retain_idx].to(device))
    test = (data.x_test[split.test_keep].to(device), data.y_test[split.test_keep].to(device))

    def measure(model: torch.nn.Module) -> dict[str, float]:
        return evaluate(model, forget=forget, retain=retain, test=test, seed=config.seed,
                        mia_samples=SCALES[config.scale].mia_samples)

    clock = time.perf_counter()
    ref_original, ref_retrained = measure(original), measure(retrained)
    timings["evaluate_references_s"] = time.perf_counter() - clock

    def compare(metrics: dict[str, float]) -> dict[str, float]:
        out = dict(metrics)
        out.update({f"gap_{k}": v for k, v in gaps(metrics, ref_retrained).items()
                    if k != "avg_gap"})
        out["avg_gap"] = gaps(metrics, ref_retrained)["avg_gap"]
        out["relative_ua"] = relative_ua(metrics["UA"], ref_retrained["UA"])
        return out

    eval_time = [0.0]

    def on_epoch(epoch: int, model: torch.nn.Module) -> dict[str, float]:
        start = time.perf_counter()
        out = compare(measure(model))
        eval_time[0] += time.perf_counter() - start
        return out

    model = copy.deepcopy(original).to(device)
    spec_policy = AUGMENTATION.get(config.dataset, "none")
    result = unlearn(model, forget, retain, config.unlearn_config(),
                     num_classes=data.num_classes, augment_policy=spec_policy, on_epoch=on_epoch)
    timings["unlearn_s"] = result.wall_time
    timings["unlearn_setup_s"] = result.setup_time
    timings["evaluate_epochs_s"] = eval_time[0]

    epochs = [dict(e) for e in result.epochs]
    if epochs and "UA" in epochs[-1] and result.diverged_epoch is None:
        final = {k: epochs[-1][k] for k in compare(ref_retrained)}
    else:
        final = compare(measure(model))
    ua_curve = [e.get("UA", math.nan) for e in epochs]
    final["epochs_to_reach_retrain_ua"] = epochs_to_reach(ua_curve, ref_retrained["UA"])
    final["unlearn_wall_time"] = result.wall_time
    timings["total_s"] = sum(v for k, v in timings.items() if k.endswith("_s") and k not in
                             ("total_s", "unlearn_setup_s", "train_original_trained_in_s",
                              "train_retrained_trained_in_s"))

    spec = METHODS[config.method]
    train_keys = ("train_accuracy", "test_accuracy", "memorised", "epochs", "n_train",
                  "final_loss", "key")
    record = {
        "config": config.to_dict(),
        "hash": config_hash(config),
        "train_config": asdict(train_cfg),
        "method": {"description": spec.description, "default_lr": spec.lr},
        "scale": config.scale,
        "environment": environment(device),
        "data": {
            "dataset": data.name,
            "source": data.source,
            "train_subset": subset,
            "train_size": len(data.x_train),
            "val_size": len(data.x_val),
            "test_size": len(data.x_test),
            "test_size_kept": int(split.test_keep.sum()),
            "forget_size": len(split.forget_idx),
            "mia_samples": SCALES[config.scale].mia_samples,
            "retain_size": len(split.retain_idx),
            "indices_hash": split.indices_hash,
        },
        "original": {"metrics": ref_original,
                     "avg_gap": gaps(ref_original, ref_retrained)["avg_gap"],  # doing nothing
                     "train": {k: train_info["original"][k] for k in train_keys}},
        "retrained": {"metrics": ref_retrained, "avg_gap": 0.0,
                      "train": {k: train_info["retrained"][k] for k in train_keys}},
        "ua_gap_original_retrained": ref_retrained["UA"] - ref_original["UA"],
        "epochs": epochs,
        "final": final,
        "diverged_epoch": result.diverged_epoch,
        "timings": timings,
    }
    return write_record(record, path)


def write_record(record: dict[str, Any], path: Path) -> dict[str, Any]:
    """Write ``record`` as JSON to ``path`` atomically (a temporary file, then ``os.replace``).

    Returns:
        The record as stored (JSON types, NaN and infinities as ``None``).
    """
    text = json.dumps(_jsonable(record), indent=1, sort_keys=True, allow_nan=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp")
    tmp.write_text(text + "\n")
    os.replace(tmp, path)
    return json.loads(text)


def without_timings(record: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``record`` without what depends on the clock (to compare two runs)."""
    out = json.loads(json.dumps(record))
    out.pop("timings", None)
    out.get("final", {}).pop("unlearn_wall_time", None)
    for epoch in out.get("epochs", []):
        for key in [k for k in epoch if "time" in k]:
            epoch.pop(key)
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _jsonable(value.tolist())
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _bad(name: str, value: Any, allowed: str) -> str:
    return f"The '{name}' field of Config must be {allowed}. Got {value!r} instead."


def _unknown(name: str, value: Any, allowed: Any) -> str:
    return f"Unknown {name} {value!r}; expected one of {names(allowed)}."
