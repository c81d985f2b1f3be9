"""Image datasets as uint8 tensors: loaders, splits, forgetting scenarios, augmentation."""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from feasible._validate import is_int, is_real, names
from feasible.paths import ROOT, cache_dir, shared_datasets_dir

#: The datasets :func:`load` knows, by name.
DATASETS: tuple[str, ...] = ("cifar10", "svhn", "fashion_mnist", "digits")

#: Training-time augmentation per dataset, as in SalUn's protocol (random crop with zero
#: padding 4 and horizontal flip for CIFAR-10; none for SVHN (digits must not be mirrored),
#: Fashion-MNIST and scikit-learn's digits).
AUGMENTATION: dict[str, str] = {
    "cifar10": "crop_flip",
    "svhn": "none",
    "fashion_mnist": "none",
    "digits": "none",
}

#: The augmentation policies :func:`augment` knows.
AUGMENTATION_POLICIES: tuple[str, ...] = ("none", "crop_flip")

#: Zero padding of the random crop (SalUn's and airbench's CIFAR-10 protocol).
CROP_PADDING = 4

#: The forgetting scenarios :func:`forget_split` knows.
SCENARIOS: tuple[str, ...] = ("random", "class")

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
SVHN_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
DIGITS_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))

#: The share of scikit-learn's digits held out as a test set (there is no official split);
#: a stratified 25% of the 1,797 images, always drawn with this seed (like an official split,
#: it does not change with the ``seed`` of :func:`load`, which only moves the validation split).
DIGITS_TEST_FRACTION = 0.25
DIGITS_TEST_SEED = 0

#: Where a download goes and where official files are looked for when no ``root`` is given
#: (git-ignored).
DATA_DIR = ROOT / "data"
#: Debian's ``dataset-fashion-mnist`` package installs its files here.
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
CIFAR10_JPEG_NAME = "cifar10_jpg_tree.tar.gz"

#: The only globals a CIFAR-10 python batch file may name, as ``(module, name)``: what numpy
#: needs to rebuild an array, as numpy 1 (``numpy.core``; the official files) and numpy 2
#: (``numpy._core``) write it. The rest of a batch is dicts, lists, ints and bytes, which need
#: no global. Unpickling can call any global a file names, so every other one is refused.
CIFAR_PICKLE_GLOBALS: frozenset[tuple[str, str]] = frozenset({
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
})

#: Bump when a decoder changes, so that every cached array is rebuilt.
_CACHE_VERSION = 1

_CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
_CIFAR10_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
_SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"
_FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@dataclass(frozen=True, eq=False)
class ImageData:
    """One dataset in memory: uint8 images ``(N, C, H, W)`` and int64 labels, three splits.

    ``x_val`` is a seeded, per-class share of the official training set; ``x_train`` is the
    rest of it. ``mean`` and ``std`` are the per-channel statistics of ``x_train`` in
    ``[0, 1]`` units (population std), meant for the model's normaliser.
    """

    name: str
    source: str
    classes: tuple[str, ...]
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def channels(self) -> int:
        """Number of image channels ``C``."""
        return int(self.x_train.shape[1])

    @property
    def image_size(self) -> int:
        """Image height ``H`` (all datasets here have square images)."""
        return int(self.x_train.shape[2])

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)


@dataclass(frozen=True, eq=False)
class ForgetSplit:
    """A forgetting scenario on an :class:`ImageData`: which training images to forget.

    ``forget_idx`` (D_f) and ``retain_idx`` (D_r) are sorted int64 indices into ``x_train``,
    disjoint, and together cover it. ``test_keep`` is a bool mask over the test set: all True
    for ``"random"``; False on the forgotten class for ``"class"`` (so TA leaves it out).
    ``indices_hash`` is a sha256 prefix of ``forget_idx``, for result records.
    """

    scenario: str
    forget_idx: torch.Tensor
    retain_idx: torch.Tensor
    test_keep: torch.Tensor
    indices_hash: str


class _Arrays(NamedTuple):
    """Decoded official splits: uint8 ``(N, C, H, W)`` images and int64 labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


class _Source(NamedTuple):
    """Files that hold one copy of a dataset, and how to decode them."""

    kind: str                      # cache file name part, e.g. "cifar10-jpeg"
    files: tuple[Path, ...]        # hashed for the cache key
    description: str               # human readable, for ImageData.source
    decode: Callable[[], _Arrays]


# --------------------------------------------------------------------------- validation

def _unknown(kind: str, value: object, allowed: Sequence[str]) -> ValueError:
    return ValueError(f"Unknown {kind} {value!r}; expected one of {names(allowed)}.")


def _check_generator(generator: object, function: str) -> None:
    if not isinstance(generator, torch.Generator):
        raise TypeError(
            f"The 'generator' parameter of {function} must be a torch.Generator. "
            f"Got {type(generator).__name__} instead."
        )


# --------------------------------------------------------------------------- public API

def load(
    name: str,
    *,
    root: str | os.PathLike | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    train_subset: int | None = None,
    download: bool = False,
) -> ImageData:
    """Load a dataset as uint8 tensors, with a seeded per-class validation split.

    Where each dataset is looked for, in this order (the official files win over the JPEG
    copy wherever both are found). An explicit location (``root``, which is the
    ``--data-root`` option and the ``data_root`` of a configuration, or for Fashion-MNIST the
    environment variable ``FEASIBLE_FASHION_MNIST``) is the only place looked in: when it does
    not hold the dataset, :class:`FileNotFoundError` says where it looked, and no other copy
    is used. The default locations are searched only when no location is given.

    - ``cifar10``: with ``root``, the official python batches (``data_batch_1..5``,
      ``test_batch``) in ``root`` or ``root/cifar-10-batches-py``, else the JPEG copy
      ``cifar10_jpg_tree.tar.gz`` as ``root`` itself or in ``root``. Without ``root``, the
      official batches in ``<repo>/data`` (or its ``cifar-10-batches-py``), else the JPEG
      copy in ``<repo>/data`` or ``../shared/datasets``. The JPEG copy is lossy; ``source``
      says which copy was used.
    - ``svhn``: the official ``train_32x32.mat`` and ``test_32x32.mat`` in ``root`` or
      ``root/svhn`` (without ``root``: ``<repo>/data``, ``<repo>/data/svhn``); label 10
      means digit 0. No other copy.
    - ``fashion_mnist``: the four IDX files, gzipped or raw, in the folder named by
      ``FEASIBLE_FASHION_MNIST`` (which wins over ``root``) or its ``FashionMNIST/raw``; else
      in ``root`` or ``root/FashionMNIST/raw``; without either, in
      ``<repo>/data/FashionMNIST/raw``, then ``/usr/share/datasets/fashion-mnist`` (Debian's
      ``dataset-fashion-mnist``).
    - ``digits``: scikit-learn's ``load_digits`` (8x8, values 0..16 scaled to 0..255). It has
      no test split: a stratified 25% is held out with a fixed seed (``DIGITS_TEST_SEED``).

    With ``download=True``, a dataset whose official files are not found is downloaded with
    torchvision into the explicit location (``<repo>/data`` without one), then looked for
    again, before any JPEG copy.

    Decoded arrays are cached in ``cache_dir()/datasets`` and used only while the sha256 of
    the source files matches the one stored with them. The official batch files are Python
    pickles; they are read by an unpickler that admits only the numpy globals a batch needs
    (:data:`CIFAR_PICKLE_GLOBALS`), so a file that names anything else is refused without
    running any of it.

    Args:
        name: One of ``DATASETS``.
        root: The folder (or, for CIFAR-10, the JPEG tarball itself) that holds the
            dataset; the only place looked in. ``None``: the default locations.
        val_fraction: Share of each class of the (subset of the) training set held out for
            validation; must be in ``[0, 1)``. Per class, ``val_fraction * n_class`` rounded
            half up.
        seed: Seeds the training subset and the validation split; an int.
        train_subset: If given, a seeded, per-class stratified subset of this many images of
            the official training set, taken before the validation split; must be an int in
            ``[num_classes, N_train]``.
        download: Try torchvision's download when the official files are absent (needs the
            network; a failure is reported, not raised, and the search goes on).

    Returns:
        The :class:`ImageData`; images uint8 ``(N, C, H, W)``, labels int64.

    Raises:
        ValueError: For an unknown name or a bad ``val_fraction``, ``seed`` or
            ``train_subset``, or a file that is truncated, corrupt, not in the expected format
            or (a CIFAR-10 pickle) names a Python object a batch never holds; the message
            names the file.
        TypeError: If ``root`` is not None, a str or a path.
        FileNotFoundError: When no copy of the dataset is found (in an explicit location: when
            that location does not hold it); the message names the location, lists the files
            looked for in each folder, and says how to get them.
    """
    if name not in DATASETS:
        raise _unknown("dataset", name, DATASETS)
    if not is_real(val_fraction) or not 0 <= val_fraction < 1:
        raise ValueError(
            "The 'val_fraction' parameter of load must be a float in the half-open interval "
            f"[0, 1). Got {val_fraction!r} instead."
        )
    if not is_int(seed):
        raise ValueError(f"The 'seed' parameter of load must be an int. Got {seed!r} instead.")
    n_classes = len(_CLASSES[name])
    if train_subset is not None and (not is_int(train_subset) or train_subset < n_classes):
        raise ValueError(
            f"The 'train_subset' parameter of load must be None or an int >= {n_classes} (one "
            f"image per class of {name!r}). Got {train_subset!r} instead."
        )
    if root is not None and not isinstance(root, (str, os.PathLike)):
        raise TypeError(
            "The 'root' parameter of load must be None, a str or a path. "
            f"Got {type(root).__name__} instead."
        )

    if name == "digits":
        arrays, source, classes = _load_digits()
    else:
        found = _LOCATORS[name](Path(root) if root is not None else None, bool(download))
        arrays, key = _cached(found)
        source = f"{found.description} (sha256 {key[:12]})"
        classes = _CLASSES[name]

    x_all = torch.from_numpy(arrays.x_train)
    y_all = torch.from_numpy(arrays.y_train)
    generator = torch.Generator().manual_seed(int(seed))
    if train_subset is not None:
        n_train = len(y_all)
        if train_subset > n_train:
            raise ValueError(
                "The 'train_subset' parameter of load must be an int in "
                f"[{n_classes}, {n_train}] for {name!r}. Got {train_subset!r} instead."
            )
        counts = torch.bincount(y_all, minlength=len(classes))
        keep = _stratified_take(y_all, _apportion(counts, int(train_subset)), generator)
        x_all, y_all = x_all[keep], y_all[keep]

    counts = torch.bincount(y_all, minlength=len(classes))
    val_counts = torch.floor(counts.to(torch.float64) * float(val_fraction) + 0.5).to(torch.int64)
    val_idx = _stratified_take(y_all, val_counts, generator)
    is_val = torch.zeros(len(y_all), dtype=torch.bool)
    is_val[val_idx] = True
    if bool(is_val.all()):
        raise ValueError(
            f"The 'val_fraction' parameter of load leaves no training images of {name!r}. "
            f"Got {val_fraction!r} instead."
        )
    x_train, y_train = x_all[~is_val], y_all[~is_val]
    mean, std = _channel_stats(x_train)
    return ImageData(
        name=name,
        source=source,
        classes=tuple(classes),
        x_train=x_train,
        y_train=y_train,
        x_val=x_all[is_val],
        y_val=y_all[is_val],
        x_test=torch.from_numpy(arrays.x_test),
        y_test=torch.from_numpy(arrays.y_test),
        mean=mean,
        std=std,
    )


def forget_split(
    data: ImageData,
    scenario: str,
    *,
    fraction: float | None = None,
    cls: int | None = None,
    seed: int = 0,
) -> ForgetSplit:
    """Split the training set into the forget set D_f and the retain set D_r.

    ``"random"`` forgets a seeded, uniformly random subset of ``round(fraction * N)`` training
    images (any class). ``"class"`` forgets every training image of class ``cls`` and drops
    that class from the test set through ``test_keep``; it draws nothing, so ``seed`` does
    not change it.

    Args:
        data: The dataset, from :func:`load`.
        scenario: ``"random"`` or ``"class"``.
        fraction: For ``"random"`` only: a float in the open interval ``(0, 1)``.
        cls: For ``"class"`` only: a class index in ``[0, num_classes)``.
        seed: Seeds the random draw; an int.

    Returns:
        The :class:`ForgetSplit`: sorted, disjoint int64 index tensors that cover
        ``x_train``, the test mask and a 16-hex-digit sha256 prefix of the forget indices.

    Raises:
        ValueError: For an unknown scenario, a missing, extra or out-of-range ``fraction`` or
            ``cls``, a bad ``seed``, or a scenario that would forget nothing or everything.
        TypeError: If ``data`` is not an :class:`ImageData`.
    """
    if not isinstance(data, ImageData):
        raise TypeError(
            "The 'data' parameter of forget_split must be an ImageData. "
            f"Got {type(data).__name__} instead."
        )
    if scenario not in SCENARIOS:
        raise _unknown("scenario", scenario, SCENARIOS)
    if not is_int(seed):
        raise ValueError(
            f"The 'seed' parameter of forget_split must be an int. Got {seed!r} instead."
        )
    n = len(data.y_train)
    if scenario == "random":
        if cls is not None:
            raise ValueError(
                "The 'cls' parameter of forget_split is only for scenario 'class' and must be None "
                f"for scenario 'random'. Got {cls!r} instead."
            )
        if not is_real(fraction) or not 0 < fraction < 1:
            raise ValueError(
                "The 'fraction' parameter of forget_split must be a float in the open interval "
                f"(0, 1) for scenario 'random'. Got {fraction!r} instead."
            )
        n_forget = int(np.floor(float(fraction) * n + 0.5))
        if not 0 < n_forget < n:
            raise ValueError(
                f"The 'fraction' parameter of forget_split gives {n_forget} of {n} training "
                "images to forget; it must give at least one and leave at least one. "
                f"Got {fraction!r} instead."
            )
        generator = torch.Generator().manual_seed(int(seed))
        forget = torch.randperm(n, generator=generator)[:n_forget]
        test_keep = torch.ones(len(data.y_test), dtype=torch.bool)
    else:
        if fraction is not None:
            raise ValueError(
                "The 'fraction' parameter of forget_split is only for scenario 'random' and "
                f"must be None for scenario 'class'. Got {fraction!r} instead."
            )
        if not is_int(cls) or not 0 <= cls < data.num_classes:
            raise ValueError(
                "The 'cls' parameter of forget_split must be a class index, an int in "
                f"[0, {data.num_classes}), for scenario 'class'. Got {cls!r} instead."
            )
        forget = torch.nonzero(data.y_train == int(cls)).flatten()
        if not 0 < len(forget) < n:
            raise ValueError(
                f"The 'cls' parameter of forget_split selects {len(forget)} of {n} training "
                "images; a class scenario must forget at least one and leave at least one. "
                f"Got {cls!r} instead."
            )
        test_keep = data.y_test != int(cls)
    forget = torch.sort(forget.to(torch.int64)).values
    is_forget = torch.zeros(n, dtype=torch.bool)
    is_forget[forget] = True
    retain = torch.nonzero(~is_forget).flatten().to(torch.int64)
    digest = hashlib.sha256(forget.numpy().astype("<i8").tobytes()).hexdigest()[:16]
    return ForgetSplit(
        scenario=scenario,
        forget_idx=forget,
        retain_idx=retain,
        test_keep=test_keep,
        indices_hash=digest,
    )


def augment(x: torch.Tensor, policy: str, generator: torch.Generator) -> torch.Tensor:
    """Augment a batch of uint8 images, per image, on the batch's device.

    ``"crop_flip"`` pads each image with 4 zero pixels on every side, takes a random crop of
    the original size, and flips it horizontally with probability 1/2 (SalUn's and airbench's
    CIFAR-10 protocol). ``"none"`` returns ``x`` itself. The random draws come from
    ``generator`` (on its own device) and are moved to ``x``'s device.

    Args:
        x: uint8 images of shape ``(B, C, H, W)``; never written to.
        policy: One of ``AUGMENTATION_POLICIES``.
        generator: The seeded source of the crops and flips.

    Returns:
        A uint8 tensor of the same shape on the same device.

    Raises:
        ValueError: For an unknown policy or a tensor that is not 4-D.
        TypeError: If ``x`` is not a uint8 tensor or ``generator`` not a torch.Generator.
    """
    if policy not in AUGMENTATION_POLICIES:
        raise _unknown("augmentation policy", policy, AUGMENTATION_POLICIES)
    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8:
        got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"The 'x' parameter of augment must be a uint8 tensor. Got {got} instead.")
    if x.dim() != 4:
        raise ValueError(
            "The 'x' parameter of augment must have shape (B, C, H, W). "
            f"Got shape {tuple(x.shape)} instead."
        )
    _check_generator(generator, "augment")
    if policy == "none":
        return x
    n, _, h, w = x.shape
    pad = CROP_PADDING
    draw = dict(generator=generator, device=generator.device)
    dy = torch.randint(0, 2 * pad + 1, (n,), **draw).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), **draw).to(x.device)
    flip = torch.randint(0, 2, (n,), **draw).to(x.device).bool()
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = dy[:, None] + torch.arange(h, device=x.device)                     # (B, H)
    j = torch.arange(w, device=x.device)
    cols = dx[:, None] + torch.where(flip[:, None], j.flip(0), j)             # (B, W)
    batch = torch.arange(n, device=x.device)[:, None, None]
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]               # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def batches(
    n: int,
    batch_size: int,
    generator: torch.Generator | None,
    *,
    shuffle: bool = True,
    drop_last: bool = False,
) -> Iterator[torch.Tensor]:
    """Index batches over ``range(n)``: one epoch, each index exactly once.

    The permutation is drawn when this is called (not when iteration starts), from
    ``generator`` on its device; the index tensors live on that device too.

    Args:
        n: Number of items; an int >= 0.
        batch_size: An int >= 1. The last batch is smaller unless ``drop_last``.
        generator: The seeded source of the shuffle; may be None only if ``shuffle`` is False.
        shuffle: Draw a random permutation (else ``0, 1, ..., n - 1`` in order).
        drop_last: Leave out a last batch smaller than ``batch_size``.

    Returns:
        An iterator of int64 index tensors.

    Raises:
        ValueError: For a bad ``n`` or ``batch_size``.
        TypeError: If ``shuffle`` is True and ``generator`` is not a torch.Generator.
    """
    if not is_int(n) or n < 0:
        raise ValueError(f"The 'n' parameter of batches must be an int >= 0. Got {n!r} instead.")
    if not is_int(batch_size) or batch_size < 1:
        raise ValueError(
            "The 'batch_size' parameter of batches must be an int >= 1. "
            f"Got {batch_size!r} instead."
        )
    if shuffle:
        _check_generator(generator, "batches")
        order = torch.randperm(int(n), generator=generator, device=generator.device)
    else:
        device = generator.device if isinstance(generator, torch.Generator) else torch.device("cpu")
        order = torch.arange(int(n), device=device)
    stop = int(n) - int(n) % batch_size if drop_last else int(n)
    return (order[start:start + batch_size] for start in range(0, stop, batch_size))


# --------------------------------------------------------------------------- splits and statistics

def _apportion(counts: torch.Tensor, total: int) -> torch.Tensor:
    """Split ``total`` over classes in proportion to ``counts`` (largest remainder)."""
    share = counts.to(torch.float64) * total / counts.sum()
    take = torch.floor(share).to(torch.int64)
    rest = total - int(take.sum())
    order = torch.argsort(-(share - take), stable=True)
    take[order[:rest]] += 1
    return torch.minimum(take, counts)


def _stratified_take(
    y: torch.Tensor, per_class: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Sorted indices of ``per_class[c]`` seeded random items of each class ``c``."""
    picked = []
    for c, k in enumerate(per_class.tolist()):
        members = torch.nonzero(y == c).flatten()
        picked.append(members[torch.randperm(len(members), generator=generator)[:k]])
    return torch.sort(torch.cat(picked)).values


def _channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and population std of uint8 images in [0, 1] units, exact (histogram)."""
    levels = torch.arange(256, dtype=torch.float64) / 255
    mean, std = [], []
    for c in range(x.shape[1]):
        counts = torch.bincount(x[:, c].reshape(-1), minlength=256).to(torch.float64)
        p = counts / counts.sum()
        m = float((p * levels).sum())
        var = float((p * (levels - m) ** 2).sum())
        mean.append(m)
        std.append(var ** 0.5)
    return tuple(mean), tuple(std)


# --------------------------------------------------------------------------- cache

_HASHES: dict[tuple[str, int, int], str] = {}


def _sha256(path: Path) -> str:
    """sha256 of a file, remembered for this process while its size and mtime are unchanged."""
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _HASHES[memo] = digest.hexdigest()
    return _HASHES[memo]


def _source_key(files: Sequence[Path]) -> str:
    """The sha256 of one file, or a sha256 over the names and sha256s of several."""
    if len(files) == 1:
        return _sha256(files[0])
    lines = "".join(f"{p.name} {_sha256(p)}\n" for p in files)
    return hashlib.sha256(lines.encode()).hexdigest()


def _cached(source: _Source) -> tuple[_Arrays, str]:
    """Decoded arrays of ``source`` from the cache, rebuilt when the source hash differs."""
    key = _source_key(source.files)
    folder = cache_dir() / "datasets"
    path = folder / f"{source.kind}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["key"]) == key and int(z["version"]) == _CACHE_VERSION:
                    return _Arrays(*(z[f] for f in _Arrays._fields)), key
        except (OSError, ValueError, KeyError, EOFError):
            pass                               # unreadable or foreign: rebuild it below
    arrays = source.decode()
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{source.kind}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, key=np.array(key), version=np.array(_CACHE_VERSION), **arrays._asdict())
        os.chmod(tmp, 0o644)                   # mkstemp makes it private; a cache is not
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return arrays, key


# --------------------------------------------------------------------------- locating sources

def _try_download(dataset: str, target: Path) -> str:
    """Download with torchvision into ``target``; return an error text ('' on success)."""
    try:
        import torchvision.datasets as tvd

        target.mkdir(parents=True, exist_ok=True)
        if dataset == "cifar10":
            tvd.CIFAR10(str(target), train=True, download=True)
        elif dataset == "svhn":
            tvd.SVHN(str(target), split="train", download=True)
            tvd.SVHN(str(target), split="test", download=True)
        else:
            tvd.FashionMNIST(str(target), train=True, download=True)
            tvd.FashionMNIST(str(target), train=False, download=True)
    except Exception as error:  # no network, a refused host, a bad checksum: report, go on
        return f"{type(error).__name__}: {error}"
    return ""


def _search(folders: Sequence[Path], names: Sequence[str], gzipped: bool = False,
            ) -> tuple[list[Path] | None, list[str]]:
    """The files ``names`` in the first of ``folders`` that holds all of them.

    With ``gzipped``, each file may also be ``<name>.gz``. Returns the files (``None`` when
    no folder holds them all) and one line per folder looked in: the folder, the files
    expected there and which of them it lacks.
    """
    listed = ", ".join(n + "[.gz]" if gzipped else n for n in names)
    looked = []
    for folder in folders:
        found, missing = [], []
        for name in names:
            options = (name, name + ".gz") if gzipped else (name,)
            hits = [folder / o for o in options if (folder / o).is_file()]
            if hits:
                found.append(hits[0])
            else:
                missing.append(name)
        if not missing:
            return found, looked
        if not folder.is_dir():
            state = "no such folder"
        elif len(missing) == len(names):
            state = "none there"
        else:
            state = "lacks " + ", ".join(missing)
        looked.append(f"{folder}: {listed} ({state})")
    return None, looked


def _search_or_download(dataset: str, folders: Sequence[Path], names: Sequence[str],
                        download: bool, target: Path, gzipped: bool = False,
                        ) -> tuple[list[Path] | None, list[str], str]:
    """:func:`_search`; when that finds nothing and ``download`` is set, download into
    ``target`` with torchvision and search again. Also returns the download's error text."""
    files, looked = _search(folders, names, gzipped)
    error = ""
    if files is None and download:
        error = _try_download(dataset, target)
        files, looked = _search(folders, names, gzipped)
    return files, looked, error


def _data_root(root: Path) -> str:
    return f"data root {root} (the 'root' of load, --data-root, or data_root of a configuration)"


def _not_found(what: str, looked: Sequence[str], how: str, download_error: str,
               explicit: str = "", defaults: str = "") -> FileNotFoundError:
    """The error for a dataset that is nowhere it was looked for.

    ``explicit`` names the location the caller chose (a data root, an environment variable);
    when given, the message says that it was the only place looked in, and that the
    ``defaults`` (described in words) were not.
    """
    places = "\n".join(f"  - {line}" for line in looked)
    note = f"\nThe download failed ({download_error})." if download_error else ""
    if explicit:
        head = f"{what} not found in the {explicit}. Looked for:"
        only = (f"\nAn explicit location is the only place looked in: the default locations "
                f"({defaults}) are searched only when none is given.")
    else:
        head, only = f"{what} not found. Looked for:", ""
    return FileNotFoundError(f"{head}\n{places}{note}{only}\n{how}")


def _cifar10_jpeg(path: Path) -> _Source:
    return _Source(
        "cifar10-jpeg", (path,),
        f"CIFAR-10, JPEG copy, lossy (quality 75, 27-33 dB PSNR against the originals), {path}",
        lambda: _read_cifar_jpeg_tar(path),
    )


def _locate_cifar10(root: Path | None, download: bool) -> _Source:
    if root is not None and root.is_file():   # the data root is the JPEG copy itself
        return _cifar10_jpeg(root)
    base = root if root is not None else DATA_DIR
    files, looked, error = _search_or_download(
        "cifar10", [base, base / "cifar-10-batches-py"], _CIFAR10_BATCHES, download, base)
    if files is not None:
        folder = files[0].parent
        batches = tuple(files)
        return _Source("cifar10-batches", batches,
                       f"CIFAR-10, official python batches in {folder}",
                       lambda: _read_cifar_batches(batches))
    if root is not None:
        jpeg = [root / CIFAR10_JPEG_NAME]
    else:
        jpeg = [DATA_DIR / CIFAR10_JPEG_NAME, shared_datasets_dir() / CIFAR10_JPEG_NAME]
    for path in jpeg:
        if path.is_file():
            return _cifar10_jpeg(path)
    looked += [f"{path}: the lossy JPEG copy" for path in jpeg]
    if root is not None:
        looked[-1] += " (or the data root itself being that file)"
    how = (f"Get the official files (cifar-10-batches-py) from {_CIFAR10_URL} or with "
           "load('cifar10', download=True), and pass their folder as the data root; or, "
           f"without a data root, put the JPEG copy {CIFAR10_JPEG_NAME} in ../shared/datasets "
           "(FEASIBLE_SHARED_DATASETS).")
    raise _not_found("CIFAR-10", looked, how, error,
                     _data_root(root) if root is not None else "",
                     "<repo>/data, and the lossy JPEG copy in ../shared/datasets")


def _locate_svhn(root: Path | None, download: bool) -> _Source:
    base = root if root is not None else DATA_DIR
    files, looked, error = _search_or_download(
        "svhn", [base, base / "svhn"], ("train_32x32.mat", "test_32x32.mat"), download, base)
    if files is None:
        raise _not_found(
            "SVHN (train_32x32.mat and test_32x32.mat)", looked,
            f"Get the official files from {_SVHN_URL} (or load('svhn', download=True)) and pass "
            "their folder as the data root. No other copy of SVHN is used.",
            error, _data_root(root) if root is not None else "", "<repo>/data",
        )
    mats = tuple(files)
    return _Source("svhn-mat", mats, f"SVHN, official .mat files in {files[0].parent}",
                   lambda: _read_svhn(mats))


def _locate_fashion_mnist(root: Path | None, download: bool) -> _Source:
    variable = os.environ.get("FEASIBLE_FASHION_MNIST")
    if variable:
        base, explicit = Path(variable), (f"folder FEASIBLE_FASHION_MNIST={variable} "
                                          "(which wins over a data root; unset it to use one)")
    elif root is not None:
        base, explicit = root, _data_root(root)
    else:
        base, explicit = DATA_DIR, ""
    if explicit:
        folders = [base, base / "FashionMNIST" / "raw"]
    else:
        folders = [DATA_DIR / "FashionMNIST" / "raw", FASHION_MNIST_SYSTEM_DIR]
    files, looked, error = _search_or_download(
        "fashion_mnist", folders, _FASHION_MNIST_FILES, download, base, gzipped=True)
    if files is None:
        raise _not_found(
            "Fashion-MNIST (train/t10k images-idx3 and labels-idx1 IDX files)", looked,
            "Install Debian's package ('apt-get install dataset-fashion-mnist'), or set "
            "FEASIBLE_FASHION_MNIST or the data root to a folder holding the four official "
            "files, or use load('fashion_mnist', download=True).",
            error, explicit, "<repo>/data/FashionMNIST/raw, Debian's package",
        )
    paths = tuple(files)
    return _Source("fashion_mnist-idx", paths, f"Fashion-MNIST, IDX files in {files[0].parent}",
                   lambda: _read_fashion_mnist(paths))


_LOCATORS: dict[str, Callable[[Path | None, bool], _Source]] = {
    "cifar10": _locate_cifar10,
    "svhn": _locate_svhn,
    "fashion_mnist": _locate_fashion_mnist,
}
_CLASSES: dict[str, tuple[str, ...]] = {
    "cifar10": CIFAR10_CLASSES,
    "svhn": SVHN_CLASSES,
    "fashion_mnist": FASHION_MNIST_CLASSES,
    "digits": DIGITS_CLASSES,
}


# --------------------------------------------------------------------------- decoders

class _ForbiddenGlobal(pickle.UnpicklingError):
    """A pickle names a global outside :data:`CIFAR_PICKLE_GLOBALS`."""

    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.global_name = f"{module}.{name}"


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler for CIFAR-10 python batches and nothing else.

    Every global a pickle names goes through :meth:`find_class`; one outside
    :data:`CIFAR_PICKLE_GLOBALS` is refused before it is imported or called, so a file cannot
    run code.
    """

    def find_class(self, module: str, name: str) -> object:
        """The admitted global ``module.name``, or :class:`_ForbiddenGlobal` for any other."""
        if (module, name) in CIFAR_PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise _ForbiddenGlobal(module, name)


def _brief(error: BaseException) -> str:
    """``Type: message`` of an exception, the message cut to 200 characters."""
    text = str(error)
    return f"{type(error).__name__}: {text[:200]}{'...' if len(text) > 200 else ''}"


def _load_cifar_pickle(path: Path) -> object:
    """One CIFAR-10 python pickle (a batch or ``batches.meta``), read by :class:`_CifarUnpickler`.

    Raises:
        ValueError: If the file names a global outside :data:`CIFAR_PICKLE_GLOBALS` (nothing
            of it is run), or is not a readable pickle (truncated or corrupt); the message
            names the file.
        OSError: If the file cannot be read at all.
    """
    raw = path.read_bytes()
    try:
        return _CifarUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except _ForbiddenGlobal as error:
        raise ValueError(
            f"{path} is not a CIFAR-10 python batch file: it names the Python object "
            f"'{error.global_name}', which no CIFAR-10 batch holds. It was not loaded (unpickling "
            "can run code, so only numpy arrays, dicts, lists, ints and bytes are admitted)."
        ) from None
    except Exception as error:  # whatever a truncated or corrupt pickle raises
        raise ValueError(
            f"{path} is not a readable CIFAR-10 python batch file: it is truncated or corrupt "
            f"({_brief(error)}). Download it again from {_CIFAR10_URL}."
        ) from error


def _cifar_batch_arrays(path: Path, batch: object) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 3, 32, 32)`` and labels of an unpickled batch, checked against the format.

    The official format: a dict with ``b"data"``, a uint8 array ``(N, 3072)`` (1024 red, then
    green, then blue values per image, each row-major), and ``b"labels"``, N ints in 0..9.
    """
    def bad(why: str) -> ValueError:
        return ValueError(f"{path} is not a CIFAR-10 python batch file: {why}.")

    if not isinstance(batch, dict):
        raise bad(f"it holds a {type(batch).__name__}, not a dict")
    for key in (b"data", b"labels"):
        if key not in batch:
            keys = ", ".join(repr(k) for k in list(batch)[:10]) or "none"
            raise bad(f"no {key!r} entry (its keys: {keys})")
    x = batch[b"data"]
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
        got = (f"a {x.dtype} array of shape {x.shape}" if isinstance(x, np.ndarray)
               else f"a {type(x).__name__}")
        raise bad(f"b'data' is {got}; expected a uint8 array of shape (N, 3072)")
    if len(x) == 0:
        raise bad("b'data' holds no images")
    labels = batch[b"labels"]
    if isinstance(labels, np.ndarray) and labels.ndim == 1 and labels.dtype.kind in "iu":
        values = labels.tolist()
    elif isinstance(labels, (list, tuple)) and all(type(v) is int for v in labels):
        values = list(labels)
    else:
        raise bad(f"b'labels' is a {type(labels).__name__}, not a list of ints")
    if len(values) != len(x):
        raise bad(f"{len(values)} labels for {len(x)} images")
    if not all(0 <= v < 10 for v in values):
        raise bad(f"labels must be in 0..9; got {min(values)}..{max(values)}")
    return x.reshape(-1, 3, 32, 32), np.array(values, dtype=np.int64)


def _read_cifar_batches(files: Sequence[Path]) -> _Arrays:
    """The official CIFAR-10 python batches, five for training and ``test_batch``, checked."""
    parts = [_cifar_batch_arrays(path, _load_cifar_pickle(path)) for path in files]
    train, test = parts[:-1], parts[-1]
    return _Arrays(
        np.concatenate([x for x, _ in train]),
        np.concatenate([y for _, y in train]),
        test[0],
        test[1],
    )


def _read_cifar_jpeg_tar(path: Path) -> _Arrays:
    """The JPEG copy: ``{train,test}/<class>/NNNN.jpg``; sorted by class, then file name."""
    from PIL import Image

    found: dict[str, list[tuple[int, str, np.ndarray]]] = {"train": [], "test": []}
    with open(path, "rb") as raw:              # a file that cannot be opened stays an OSError
        try:
            with tarfile.open(fileobj=raw, mode="r:*") as tar:
                for member in tar:             # one sequential pass over the stream
                    parts = member.name.split("/")
                    if not member.isfile() or not member.name.endswith(".jpg") or len(parts) < 3:
                        continue
                    split, cls, file = parts[-3:]
                    if split not in found or cls not in CIFAR10_CLASSES:
                        raise ValueError(
                            f"{path}: unexpected member {member.name!r} "
                            "(expected train|test/<class>/NNNN.jpg)."
                        )
                    with Image.open(io.BytesIO(tar.extractfile(member).read())) as image:
                        pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
                    if pixels.shape != (32, 32, 3):
                        raise ValueError(
                            f"{path}: {member.name} is {pixels.shape}, not a 32x32 RGB image."
                        )
                    found[split].append((CIFAR10_CLASSES.index(cls), file, pixels))
        except ValueError:
            raise
        except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
            raise ValueError(
                f"{path} is not a readable tarball of the CIFAR-10 JPEG copy: it is truncated "
                f"or corrupt ({_brief(error)})."
            ) from error
    out = []
    for split in ("train", "test"):
        items = sorted(found[split], key=lambda item: item[:2])
        if not items:
            raise ValueError(f"{path} holds no {split}/<class>/*.jpg images.")
        out.append(np.stack([p for *_, p in items]).transpose(0, 3, 1, 2).copy())
        out.append(np.array([c for c, *_ in items], dtype=np.int64))
    return _Arrays(*out)


def _svhn_mat_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 3, 32, 32)`` and labels 0..9 of one official SVHN ``.mat`` file, checked.

    The official format (MATLAB 5): ``X``, a uint8 array ``(32, 32, 3, N)``, and ``y``, N
    labels in 1..10, where 10 is the digit 0.
    """
    import scipy.io

    with open(path, "rb") as f:                # a file that cannot be opened stays an OSError
        try:
            mat = scipy.io.loadmat(f)
        except Exception as error:  # whatever a truncated or corrupt .mat file raises
            raise ValueError(
                f"{path} is not a readable SVHN .mat file: it is truncated or corrupt "
                f"({_brief(error)}). Download it again from {_SVHN_URL}."
            ) from error

    def bad(why: str) -> ValueError:
        return ValueError(f"{path} is not an SVHN .mat file: {why}.")

    variables = [k for k in mat if not k.startswith("__")]
    if not variables:
        raise bad(f"it holds no variables: it is truncated or corrupt. Download it again from "
                  f"{_SVHN_URL}")
    for key in ("X", "y"):
        if key not in mat:
            raise bad(f"no {key!r} variable (its variables: {', '.join(map(repr, variables))})")
    x, y = mat["X"], mat["y"]
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4 \
            or x.shape[:3] != (32, 32, 3):
        got = (f"a {x.dtype} array of shape {x.shape}" if isinstance(x, np.ndarray)
               else f"a {type(x).__name__}")
        raise bad(f"X is {got}; expected a uint8 array of shape (32, 32, 3, N)")
    n = x.shape[3]
    if n == 0:
        raise bad("X holds no images")
    if not isinstance(y, np.ndarray) or y.dtype.kind not in "iuf":
        got = f"a {y.dtype} array" if isinstance(y, np.ndarray) else f"a {type(y).__name__}"
        raise bad(f"y is {got}; expected labels in 1..10")
    y = y.reshape(-1)
    if len(y) != n:
        raise bad(f"X holds {n} images but y {len(y)} labels")
    if not np.all((y >= 1) & (y <= 10) & (y == np.round(y))):
        raise bad("labels must be whole numbers in 1..10 (10 is the digit 0); "
                  f"got {y.min()}..{y.max()}")
    return x.transpose(3, 2, 0, 1).copy(), y.astype(np.int64) % 10


def _read_svhn(files: Sequence[Path]) -> _Arrays:
    """The official SVHN ``train_32x32.mat`` and ``test_32x32.mat``, checked."""
    (x_train, y_train), (x_test, y_test) = (_svhn_mat_arrays(path) for path in files)
    return _Arrays(x_train, y_train, x_test, y_test)


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file of unsigned bytes (magic 0x0000080D, D dimensions), gzipped or raw."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f:              # a file that cannot be opened stays an OSError
        try:
            data = f.read()
        except (EOFError, OSError, zlib.error) as error:   # a truncated or corrupt gzip file
            raise ValueError(
                f"{path} is not a readable IDX file: it is truncated or corrupt ({_brief(error)})."
            ) from error
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (bad magic number).")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(dims)):
        raise ValueError(
            f"{path}: the header gives shape {dims} but the file holds {len(data) - offset} bytes."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def _read_fashion_mnist(files: Sequence[Path]) -> _Arrays:
    x_train, y_train, x_test, y_test = (_read_idx(p) for p in files)
    for x, y, split in ((x_train, y_train, "train"), (x_test, y_test, "t10k")):
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(
                f"Fashion-MNIST {split}: images {x.shape} and labels {y.shape} do not match."
            )
        if len(y) and y.max() >= 10:
            raise ValueError(f"Fashion-MNIST {split}: labels must be in 0..9; got up to {y.max()}.")
    return _Arrays(
        x_train[:, None].copy(),
        y_train.astype(np.int64),
        x_test[:, None].copy(),
        y_test.astype(np.int64),
    )


def _load_digits() -> tuple[_Arrays, str, tuple[str, ...]]:
    """scikit-learn's digits, 0..16 scaled to uint8, with a fixed stratified 25% test split."""
    import importlib.resources

    import sklearn
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[:, None]
    y = torch.from_numpy(bunch.target.astype(np.int64))
    counts = torch.bincount(y, minlength=10)
    test_counts = torch.floor(counts.to(torch.float64) * DIGITS_TEST_FRACTION + 0.5).to(torch.int64)
    test_idx = _stratified_take(y, test_counts, torch.Generator().manual_seed(DIGITS_TEST_SEED))
    is_test = np.zeros(len(y), dtype=bool)
    is_test[test_idx.numpy()] = True
    file = Path(str(importlib.resources.files("sklearn.datasets") / "data" / "digits.csv.gz"))
    digest = _sha256(file)[:12] if file.is_file() else "unknown"
    source = (
        f"scikit-learn {sklearn.__version__} load_digits (digits.csv.gz sha256 {digest}); "
        f"test set: a stratified {DIGITS_TEST_FRACTION:.0%} drawn with seed {DIGITS_TEST_SEED}"
    )
    y_np = y.numpy()
    arrays = _Arrays(x[~is_test], y_np[~is_test], x[is_test], y_np[is_test])
    return arrays, source, DIGITS_CLASSES
