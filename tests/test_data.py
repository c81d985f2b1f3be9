"""Tests for feasible.data: loaders on tiny files written here, splits, scenarios, augmentation."""
from __future__ import annotations

import gzip
import io
import os
import pickle
import re
import shlex
import struct
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
import scipy.io
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from feasible import data
from feasible.paths import shared_datasets_dir


# --------------------------------------------------------------------------- tiny source files

@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No real dataset and no real cache is visible: only what a test writes under tmp_path."""
    monkeypatch.setenv("FEASIBLE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FEASIBLE_SHARED_DATASETS", str(tmp_path / "no-shared"))
    monkeypatch.delenv("FEASIBLE_FASHION_MNIST", raising=False)
    monkeypatch.setattr(data, "DATA_DIR", tmp_path / "no-data")
    monkeypatch.setattr(data, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "no-system")
    monkeypatch.setattr(data, "_try_download", lambda name, target: "no network in tests")
    return tmp_path


def _tagged_images(n: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Random uint8 images whose first pixel is their index, so each can be recognised."""
    x = np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)
    x.reshape(n, -1)[:, 0] = np.arange(n)
    return x


def _tags(x: torch.Tensor) -> list[int]:
    return x.reshape(len(x), -1)[:, 0].tolist()


class Python2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2's cPickle wrote the official CIFAR-10 python batches.

    A Python 2 ``str`` (``bytes`` here) is a (SHORT_)BINSTRING, not Python 3's
    ``_codecs.encode`` call, and numpy's globals are in ``numpy.core`` (numpy 1), not in
    ``numpy._core`` (numpy 2). Loaded with ``encoding="bytes"``, as the official files must be.
    """

    dispatch = dict(pickle._Pickler.dispatch)

    def save_bytes(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    def save_global(self, obj, name=None) -> None:
        module = getattr(obj, "__module__", "") or ""
        if module.startswith("numpy._core"):
            module = "numpy.core" + module[len("numpy._core"):]
            self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())
            self.memoize(obj)
        else:
            super().save_global(obj, name)

    dispatch[bytes] = save_bytes
    dispatch[type] = save_global


def python2_pickle(obj: object) -> bytes:
    """``obj`` pickled as Python 2 wrote the official CIFAR-10 batches."""
    buffer = io.BytesIO()
    Python2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def cifar_batch(rows: np.ndarray, labels: Sequence[int], label: bytes = b"batch") -> dict:
    """A batch dict with the official keys: b"data", b"labels", b"batch_label", b"filenames"."""
    return {
        b"batch_label": label,
        b"labels": [int(v) for v in labels],
        b"data": rows,
        b"filenames": [f"image_{i:05d}.png".encode() for i in range(len(labels))],
    }


def write_cifar_batches(
    folder: Path, per_batch: int = 8, n_test: int = 10, seed: int = 0
) -> np.ndarray:
    """Five train batches and a test batch in the official format; returns all train rows."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = _tagged_images(5 * per_batch, (3072,), seed)
    labels = np.arange(5 * per_batch) % 10
    for i in range(5):
        part = slice(i * per_batch, (i + 1) * per_batch)
        batch = cifar_batch(rows[part], labels[part], f"training batch {i + 1} of 5".encode())
        (folder / f"data_batch_{i + 1}").write_bytes(python2_pickle(batch))
    test = cifar_batch(_tagged_images(n_test, (3072,), seed + 1), np.arange(n_test) % 10,
                       b"testing batch 1 of 1")
    (folder / "test_batch").write_bytes(python2_pickle(test))
    meta = {b"label_names": [c.encode() for c in data.CIFAR10_CLASSES],
            b"num_cases_per_batch": per_batch, b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(python2_pickle(meta))
    return rows


def write_svhn(folder: Path, n_train: int = 20, n_test: int = 10) -> tuple[np.ndarray, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    x = np.random.default_rng(0).integers(0, 256, (32, 32, 3, n_train), dtype=np.uint8)
    y = (np.arange(n_train) % 10 + 1).reshape(-1, 1).astype(np.uint8)      # 1..10, 10 is digit 0
    scipy.io.savemat(folder / "train_32x32.mat", {"X": x, "y": y})
    xt = np.random.default_rng(1).integers(0, 256, (32, 32, 3, n_test), dtype=np.uint8)
    yt = (np.arange(n_test) % 10 + 1).reshape(-1, 1).astype(np.uint8)
    scipy.io.savemat(folder / "test_32x32.mat", {"X": xt, "y": yt})
    return x, y


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(folder: Path, gz: bool, n_train: int = 20, n_test: int = 10) -> np.ndarray:
    folder.mkdir(parents=True, exist_ok=True)
    x = _tagged_images(n_train, (28, 28), 0)
    arrays = {
        "train-images-idx3-ubyte": x,
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": _tagged_images(n_test, (28, 28), 1),
        "t10k-labels-idx1-ubyte": np.arange(n_test) % 10,
    }
    for stem, array in arrays.items():
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(_idx_bytes(array)))
        else:
            (folder / stem).write_bytes(_idx_bytes(array))
    return x


def write_jpeg_tar(path: Path, per_class_train: int = 2, per_class_test: int = 1) -> None:
    """A tiny tarball in the JPEG copy's layout; flat colours survive JPEG almost exactly."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        # written out of order on purpose: the reader sorts by class, then file name
        for split, count in (("test", per_class_test), ("train", per_class_train)):
            for c, cls in reversed(list(enumerate(data.CIFAR10_CLASSES))):
                for i in range(count):
                    buffer = io.BytesIO()
                    image = Image.new("RGB", (32, 32), (20 * c, 10 * i, 200))
                    image.save(buffer, "JPEG", quality=95)
                    info = tarfile.TarInfo(f"{split}/{cls}/{i:04d}.jpg")
                    info.size = buffer.tell()
                    buffer.seek(0)
                    tar.addfile(info, buffer)


# --------------------------------------------------------------------------- loaders

def test_cifar_batches_layout_labels_and_source(isolated):
    rows = write_cifar_batches(isolated / "cifar" / "cifar-10-batches-py")
    d = data.load("cifar10", root=isolated / "cifar", val_fraction=0.0)
    assert d.x_train.shape == (40, 3, 32, 32) and d.x_train.dtype == torch.uint8
    assert d.y_train.dtype == torch.int64 and d.y_train.tolist() == (np.arange(40) % 10).tolist()
    # row layout: 1024 red, then green, then blue, each row-major
    assert torch.equal(d.x_train, torch.from_numpy(rows.reshape(40, 3, 32, 32)))
    assert d.x_train[3, 1, 2, 5] == rows[3, 1024 + 2 * 32 + 5]
    assert d.x_test.shape == (10, 3, 32, 32) and d.y_test.tolist() == list(range(10))
    assert d.x_val.shape == (0, 3, 32, 32)
    assert d.classes == data.CIFAR10_CLASSES and d.num_classes == 10
    assert (d.channels, d.image_size) == (3, 32)
    assert "official python batches" in d.source and "sha256" in d.source


def test_mean_std_are_the_training_set_statistics(isolated):
    write_cifar_batches(isolated / "cifar")
    d = data.load("cifar10", root=isolated / "cifar")
    x = d.x_train.to(torch.float64) / 255
    assert np.allclose(d.mean, x.mean(dim=(0, 2, 3)).tolist(), atol=1e-12)
    assert np.allclose(d.std, x.std(dim=(0, 2, 3), unbiased=False).tolist(), atol=1e-12)


def test_cifar_jpeg_copy_is_read_sorted_and_marked_lossy(isolated):
    tar = isolated / "no-shared" / data.CIFAR10_JPEG_NAME
    write_jpeg_tar(tar)
    d = data.load("cifar10", val_fraction=0.0)            # found in the shared folder
    assert d.x_train.shape == (20, 3, 32, 32) and d.x_test.shape == (10, 3, 32, 32)
    assert d.y_train.tolist() == [c for c in range(10) for _ in range(2)]
    assert d.y_test.tolist() == list(range(10))
    # flat colours: class c, image i was (20c, 10i, 200); JPEG moves them by a few levels
    colours = [[20 * c, 10 * i, 200] for c in range(10) for i in range(2)]
    expected = torch.tensor(colours, dtype=torch.float64)
    assert (d.x_train.to(torch.float64).mean(dim=(2, 3)) - expected).abs().max() < 4
    assert "JPEG copy, lossy" in d.source
    # the tarball itself can be the root, too
    assert torch.equal(data.load("cifar10", root=tar, val_fraction=0.0).x_train, d.x_train)


def test_svhn_mat_layout_and_label_ten_is_zero(isolated):
    x, y = write_svhn(isolated / "svhn")
    d = data.load("svhn", root=isolated, val_fraction=0.0)     # found in root/svhn
    assert d.x_train.shape == (20, 3, 32, 32) and d.x_train.dtype == torch.uint8
    assert d.y_train.tolist() == (y.ravel() % 10).tolist()
    assert 0 in d.y_train.tolist() and 10 not in d.y_train.tolist()
    assert d.x_train[4, 2, 7, 9] == x[7, 9, 2, 4]                 # X is (H, W, C, N)
    assert d.x_test.shape == (10, 3, 32, 32)
    assert d.classes == tuple("0123456789")
    assert "SVHN, official .mat" in d.source


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_idx_gzipped_and_raw(isolated, gz):
    x = write_idx(isolated / "FashionMNIST" / "raw", gz=gz)     # torchvision's layout under root
    d = data.load("fashion_mnist", root=isolated, val_fraction=0.0)
    assert d.x_train.shape == (20, 1, 28, 28) and d.x_test.shape == (10, 1, 28, 28)
    assert torch.equal(d.x_train[:, 0], torch.from_numpy(x))
    assert d.y_train.tolist() == (np.arange(20) % 10).tolist()
    assert d.classes[0] == "T-shirt/top" and d.classes[9] == "Ankle boot"


def test_fashion_mnist_environment_variable_wins(isolated, monkeypatch):
    write_idx(isolated / "root", gz=True, n_train=20)
    write_idx(isolated / "env", gz=False, n_train=30)
    monkeypatch.setenv("FEASIBLE_FASHION_MNIST", str(isolated / "env"))
    d = data.load("fashion_mnist", root=isolated / "root", val_fraction=0.0)
    assert len(d.x_train) == 30 and str(isolated / "env") in d.source


def test_bad_idx_magic_is_a_value_error(isolated):
    folder = isolated / "fm"
    write_idx(folder, gz=False)
    (folder / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x09\x01" + bytes(8))
    with pytest.raises(ValueError, match="IDX"):
        data.load("fashion_mnist", root=folder)


@pytest.mark.parametrize(
    "name, words",
    [
        ("cifar10", ["data_batch_1", data.CIFAR10_JPEG_NAME, "root", "download failed"]),
        ("svhn", ["train_32x32.mat", "ufldl.stanford.edu", "root"]),
        ("fashion_mnist", ["train-images-idx3-ubyte", "dataset-fashion-mnist", "FEASIBLE_FASHION_MNIST"]),
    ],
)
def test_missing_dataset_says_where_it_looked_and_how_to_get_it(isolated, name, words):
    with pytest.raises(FileNotFoundError) as info:
        data.load(name, root=isolated / "empty", download=name == "cifar10")
    message = str(info.value)
    assert str(isolated / "empty") in message
    for word in words:
        assert word in message


@pytest.mark.parametrize(
    "name, places",
    [
        ("cifar10", [("no-data",), ("no-data", "cifar-10-batches-py"),
                     ("no-data", data.CIFAR10_JPEG_NAME), ("no-shared", data.CIFAR10_JPEG_NAME)]),
        ("svhn", [("no-data",), ("no-data", "svhn")]),
        ("fashion_mnist", [("no-data", "FashionMNIST", "raw"), ("no-system",)]),
    ],
)
def test_missing_dataset_in_the_default_locations_lists_them(isolated, name, places):
    with pytest.raises(FileNotFoundError) as info:
        data.load(name)
    message = str(info.value)
    for parts in places:
        assert str(isolated.joinpath(*parts)) in message
    assert "data root" not in message.split("\n")[0] and "only place" not in message


# --------------------------------------------------------------------------- pickles are not code

class _Shell:
    """Unpickling this runs a shell command (``os.system``, ``posix.system`` on Linux)."""

    def __init__(self, marker: Path) -> None:
        self.command = f"touch {shlex.quote(str(marker))}"

    def __reduce__(self):
        return os.system, (self.command,)


class _Exec:
    """Unpickling this runs Python code (``builtins.exec``)."""

    def __init__(self, marker: Path) -> None:
        self.code = f"open({str(marker)!r}, 'w').close()"

    def __reduce__(self):
        return exec, (self.code,)


class _NumpyRunstring:
    """Unpickling this runs Python code through a function of numpy itself."""

    def __init__(self, marker: Path) -> None:
        self.code = f"open({str(marker)!r}, 'w').close()"

    def __reduce__(self):
        from numpy.testing._private.utils import runstring

        return runstring, (self.code, {})


PAYLOADS = {"os.system": (_Shell, "system"), "exec": (_Exec, "exec"),
            "numpy runstring": (_NumpyRunstring, "runstring")}


@pytest.mark.parametrize("pickler", ["python2", "python3"])
@pytest.mark.parametrize("payload", list(PAYLOADS))
def test_malicious_batch_does_not_run_its_payload(isolated, payload, pickler):
    make, function = PAYLOADS[payload]
    dump = python2_pickle if pickler == "python2" else pickle.dumps

    def malicious(marker: Path) -> bytes:
        return dump(cifar_batch(make(marker), np.arange(8) % 10))

    # the payload is live: plain pickle runs it
    control = isolated / "control-ran"
    pickle.loads(malicious(control), encoding="bytes")
    assert control.exists()

    folder = isolated / "c"
    write_cifar_batches(folder)
    marker = isolated / "payload-ran"
    bad = folder / "data_batch_3"
    bad.write_bytes(malicious(marker))
    with pytest.raises(ValueError) as info:
        data.load("cifar10", root=folder)
    assert not marker.exists()
    message = str(info.value)
    assert str(bad) in message
    assert re.search(rf"'[\w.]+\.{function}'", message), message    # names the forbidden global
    assert "not loaded" in message


def test_official_batches_ask_only_for_the_admitted_globals(isolated):
    """The globals an official (Python 2, protocol 2) batch asks for are exactly those admitted."""
    asked = set()

    class Spy(pickle.Unpickler):
        def find_class(self, module, name):
            asked.add((module, name))
            return super().find_class(module, name)

    folder = isolated / "c"
    write_cifar_batches(folder)
    for name in ("data_batch_1", "test_batch", "batches.meta"):
        Spy(io.BytesIO((folder / name).read_bytes()), encoding="bytes").load()
    assert asked == {("numpy.core.multiarray", "_reconstruct"), ("numpy", "ndarray"),
                     ("numpy", "dtype")}
    assert asked <= data.CIFAR_PICKLE_GLOBALS
    meta = data._load_cifar_pickle(folder / "batches.meta")
    assert meta[b"label_names"][0] == b"airplane"


def test_batches_written_by_python3_and_numpy2_load_too(isolated):
    folder = isolated / "c"
    rows = write_cifar_batches(folder)
    for path in folder.iterdir():                 # numpy 2 names numpy._core.multiarray
        path.write_bytes(pickle.dumps(pickle.loads(path.read_bytes(), encoding="bytes")))
    d = data.load("cifar10", root=folder, val_fraction=0.0)
    assert torch.equal(d.x_train, torch.from_numpy(rows.reshape(40, 3, 32, 32)))


def _rows(n: int = 8) -> np.ndarray:
    return _tagged_images(n, (3072,), 5)


_LABELS = (np.arange(8) % 10).tolist()
_VALID = python2_pickle(cifar_batch(_rows(), _LABELS))

CORRUPT_BATCHES = {
    "empty file": (b"", "truncated or corrupt"),
    "truncated to half": (_VALID[: len(_VALID) // 2], "truncated or corrupt"),
    "truncated by one byte": (_VALID[:-1], "truncated or corrupt"),
    "header only": (_VALID[:40], "truncated or corrupt"),
    "random bytes": (np.random.default_rng(0).bytes(30000), "truncated or corrupt"),
    "text": (b"data_batch_1: see the README\n", "truncated or corrupt"),
    "a list, not a dict": (python2_pickle([1, 2, 3]), "holds a list"),
    "no data": (python2_pickle({b"labels": _LABELS}), r"no b'data'"),
    "no labels": (python2_pickle({b"data": _rows()}), r"no b'labels'"),
    "str keys": (pickle.dumps({"data": _rows(), "labels": _LABELS}), r"no b'data'.*'data'"),
    "data of the wrong shape": (python2_pickle(cifar_batch(_rows()[:, :3000], _LABELS)),
                                r"\(N, 3072\)"),
    "data flat": (python2_pickle(cifar_batch(_rows().reshape(-1), _LABELS)), r"\(N, 3072\)"),
    "data float": (python2_pickle(cifar_batch(_rows().astype(np.float32), _LABELS)), "uint8"),
    "data a list": (python2_pickle(cifar_batch(_rows().tolist(), _LABELS)), "uint8"),
    "data empty": (python2_pickle(cifar_batch(_rows()[:0], [])), "no images"),
    "label 10": (python2_pickle(cifar_batch(_rows(), _LABELS[:-1] + [10])), r"0\.\.9"),
    "label -1": (python2_pickle(cifar_batch(_rows(), [-1] + _LABELS[1:])), r"0\.\.9"),
    "huge label": (python2_pickle(cifar_batch(_rows(), [2**70] + _LABELS[1:])), r"0\.\.9"),
    "float labels": (python2_pickle({b"data": _rows(), b"labels": [0.0] * 8}), "ints"),
    "labels a string": (python2_pickle({b"data": _rows(), b"labels": b"01234567"}), "ints"),
    "too few labels": (python2_pickle(cifar_batch(_rows(), _LABELS[:-1])), "7 labels for 8"),
}


@pytest.mark.parametrize("case", list(CORRUPT_BATCHES))
def test_corrupt_batch_is_a_value_error_naming_the_file(isolated, case):
    raw, words = CORRUPT_BATCHES[case]
    folder = isolated / "c"
    write_cifar_batches(folder)
    bad = folder / "data_batch_2"
    bad.write_bytes(raw)
    with pytest.raises(ValueError, match=words) as info:
        data.load("cifar10", root=folder)
    assert str(bad) in str(info.value)
    assert not (isolated / "cache" / "datasets" / "cifar10-batches.npz").exists()


def _mat_bytes(mdict: dict, compress: bool = False) -> bytes:
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, mdict, do_compression=compress)
    return buffer.getvalue()


_SVHN_X = np.random.default_rng(3).integers(0, 256, (32, 32, 3, 20), dtype=np.uint8)
_SVHN_Y = (np.arange(20) % 10 + 1).reshape(-1, 1).astype(np.uint8)


def _cells(*items: object) -> np.ndarray:
    cells = np.empty(len(items), dtype=object)
    cells[:] = list(items)
    return cells


_MAT = _mat_bytes({"X": _SVHN_X, "y": _SVHN_Y})
_MAT_COMPRESSED = _mat_bytes({"X": _SVHN_X, "y": _SVHN_Y}, compress=True)

CORRUPT_MATS = {
    "empty file": (b"", "truncated or corrupt"),
    "truncated to half": (_MAT[: len(_MAT) // 2], "truncated or corrupt"),
    "compressed, truncated to half": (_MAT_COMPRESSED[: len(_MAT_COMPRESSED) // 2],
                                      "truncated or corrupt"),
    "compressed, a byte flipped": (_MAT_COMPRESSED[:300] + bytes([_MAT_COMPRESSED[300] ^ 0xFF])
                                   + _MAT_COMPRESSED[301:], "truncated or corrupt"),
    "header only": (_MAT[:128], "truncated or corrupt"),
    "random bytes": (np.random.default_rng(0).bytes(30000), "truncated or corrupt"),
    "a pickle": (pickle.dumps({"X": _SVHN_X}), "truncated or corrupt"),
    "no X": (_mat_bytes({"y": _SVHN_Y}), "no 'X'"),
    "no y": (_mat_bytes({"X": _SVHN_X}), "no 'y'"),
    "X of the wrong shape": (_mat_bytes({"X": _SVHN_X[:, :, 0], "y": _SVHN_Y}),
                             r"\(32, 32, 3, N\)"),
    "X empty": (_mat_bytes({"X": _SVHN_X[..., :0], "y": _SVHN_Y[:0]}), "no images"),
    "X float": (_mat_bytes({"X": _SVHN_X / 255.0, "y": _SVHN_Y}), "uint8"),
    "X a cell array": (_mat_bytes({"X": _cells(_SVHN_X, _SVHN_Y), "y": _SVHN_Y}), "uint8"),
    "label 0": (_mat_bytes({"X": _SVHN_X, "y": _SVHN_Y - 1}), r"1\.\.10"),
    "label 11": (_mat_bytes({"X": _SVHN_X, "y": _SVHN_Y + 1}), r"1\.\.10"),
    "label 2.5": (_mat_bytes({"X": _SVHN_X, "y": _SVHN_Y + 0.5}), r"1\.\.10"),
    "labels text": (_mat_bytes({"X": _SVHN_X, "y": "12345"}), r"1\.\.10"),
    "too few labels": (_mat_bytes({"X": _SVHN_X, "y": _SVHN_Y[:-1]}), "20 images but y 19"),
}


@pytest.mark.parametrize("case", list(CORRUPT_MATS))
def test_corrupt_svhn_mat_is_a_value_error_naming_the_file(isolated, case):
    raw, words = CORRUPT_MATS[case]
    folder = isolated / "svhn"
    write_svhn(folder)
    bad = folder / "train_32x32.mat"
    bad.write_bytes(raw)
    with pytest.raises(ValueError, match=words) as info:
        data.load("svhn", root=folder)
    assert str(bad) in str(info.value)


@pytest.mark.parametrize("cut", ["empty", "header", "half", "random"])
def test_corrupt_jpeg_tarball_is_a_value_error_naming_the_file(isolated, cut):
    tar = isolated / "j" / data.CIFAR10_JPEG_NAME
    write_jpeg_tar(tar)
    raw = tar.read_bytes()
    tar.write_bytes({"empty": b"", "header": raw[:200], "half": raw[: len(raw) // 2],
                     "random": np.random.default_rng(0).bytes(3000)}[cut])
    with pytest.raises(ValueError, match="truncated or corrupt") as info:
        data.load("cifar10", root=tar)
    assert str(tar) in str(info.value)


@pytest.mark.parametrize("cut", ["empty", "half", "random"])
def test_corrupt_gzipped_idx_is_a_value_error_naming_the_file(isolated, cut):
    folder = isolated / "fm"
    write_idx(folder, gz=True)
    bad = folder / "train-images-idx3-ubyte.gz"
    raw = bad.read_bytes()
    bad.write_bytes({"empty": b"", "half": raw[: len(raw) // 2],
                     "random": np.random.default_rng(0).bytes(300)}[cut])
    with pytest.raises(ValueError, match="IDX") as info:
        data.load("fashion_mnist", root=folder)
    assert str(bad) in str(info.value)


# --------------------------------------------------------------------------- an explicit root

def test_explicit_cifar_root_without_the_files_is_an_error_not_a_fallback(isolated):
    write_jpeg_tar(isolated / "no-shared" / data.CIFAR10_JPEG_NAME)        # the lossy default
    write_cifar_batches(isolated / "no-data" / "cifar-10-batches-py")     # <repo>/data
    for root in (isolated / "elsewhere", isolated / "missing"):
        if root.name == "elsewhere":
            write_svhn(root)                                               # not CIFAR-10
        with pytest.raises(FileNotFoundError) as info:
            data.load("cifar10", root=root)
        message = str(info.value)
        for word in (f"data root {root}", str(root / "cifar-10-batches-py"), "data_batch_1",
                     "data_batch_5", "test_batch", str(root / data.CIFAR10_JPEG_NAME),
                     "only place looked in"):
            assert word in message, word
        assert str(isolated / "no-shared") not in message and str(isolated / "no-data") not in message
    assert "no such folder" in message
    # the default location (no root) still finds <repo>/data, then falls back to the JPEG copy
    assert str(isolated / "no-data") in data.load("cifar10").source
    for path in (isolated / "no-data" / "cifar-10-batches-py").iterdir():
        path.unlink()
    assert "JPEG copy, lossy" in data.load("cifar10").source


def test_explicit_cifar_root_may_hold_the_jpeg_copy(isolated):
    write_jpeg_tar(isolated / "root" / data.CIFAR10_JPEG_NAME)
    d = data.load("cifar10", root=isolated / "root")
    assert "JPEG copy, lossy" in d.source and str(isolated / "root") in d.source


def test_explicit_cifar_root_with_some_batches_names_the_missing_ones(isolated):
    root = isolated / "root"
    write_cifar_batches(root)
    (root / "data_batch_4").unlink()
    with pytest.raises(FileNotFoundError, match="lacks data_batch_4"):
        data.load("cifar10", root=root)


def test_explicit_svhn_root_without_the_files_is_an_error(isolated):
    write_svhn(isolated / "no-data" / "svhn")
    root = isolated / "elsewhere"
    root.mkdir()
    with pytest.raises(FileNotFoundError) as info:
        data.load("svhn", root=root)
    message = str(info.value)
    for word in (f"data root {root}", str(root / "svhn"), "train_32x32.mat", "test_32x32.mat"):
        assert word in message, word
    assert str(isolated / "no-data") not in message
    assert str(isolated / "no-data") in data.load("svhn").source


def test_explicit_fashion_mnist_locations_without_the_files_are_errors(isolated, monkeypatch):
    write_idx(isolated / "no-system", gz=True)                 # Debian's package
    root = isolated / "elsewhere"
    root.mkdir()
    with pytest.raises(FileNotFoundError) as info:
        data.load("fashion_mnist", root=root)
    message = str(info.value)
    for word in (f"data root {root}", str(root / "FashionMNIST" / "raw"),
                 "train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        assert word in message, word
    assert str(isolated / "no-system") not in message
    assert str(isolated / "no-system") in data.load("fashion_mnist").source

    env = isolated / "env"
    monkeypatch.setenv("FEASIBLE_FASHION_MNIST", str(env))
    for kwargs in ({}, {"root": isolated / "no-system"}):      # it wins over 'root', as when found
        with pytest.raises(FileNotFoundError) as info:
            data.load("fashion_mnist", **kwargs)
        message = str(info.value)
        assert f"FEASIBLE_FASHION_MNIST={env}" in message and "train-images-idx3-ubyte" in message
        assert str(isolated / "no-system") not in message.split("Looked for")[1]


@pytest.mark.parametrize("name", ["cifar10", "svhn", "fashion_mnist"])
def test_download_goes_into_the_explicit_root(isolated, monkeypatch, name):
    targets = []

    def fake_download(dataset: str, target: Path) -> str:
        targets.append(target)
        {"cifar10": lambda: write_cifar_batches(target / "cifar-10-batches-py"),
         "svhn": lambda: write_svhn(target),
         "fashion_mnist": lambda: write_idx(target / "FashionMNIST" / "raw", gz=True)}[dataset]()
        return ""

    monkeypatch.setattr(data, "_try_download", fake_download)
    root = isolated / "root"
    d = data.load(name, root=root, download=True)
    assert targets == [root] and str(root) in d.source


def test_cli_data_root_without_the_dataset_is_an_error(tmp_path):
    """A real ``python -m feasible run --data-root``: exit status 2 and where it looked."""
    repo = Path(__file__).resolve().parents[1]
    write_jpeg_tar(tmp_path / "shared" / data.CIFAR10_JPEG_NAME)
    empty = tmp_path / "empty"
    empty.mkdir()
    env = dict(os.environ, FEASIBLE_SHARED_DATASETS=str(tmp_path / "shared"),
               FEASIBLE_CACHE=str(tmp_path / "cache"), FEASIBLE_RESULTS=str(tmp_path / "results"),
               PYTHONPATH=str(repo))
    proc = subprocess.run(
        [sys.executable, "-m", "feasible", "run", "--method", "ft", "--dataset", "cifar10",
         "--data-root", str(empty), "--device", "cpu"],
        env=env, cwd=repo, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"data root {empty}" in proc.stderr and "data_batch_1" in proc.stderr
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").rglob("*.json"))


# --------------------------------------------------------------------------- splits and cache

def test_validation_split_is_per_class_disjoint_seeded(isolated):
    write_cifar_batches(isolated / "c")                    # 40 images, 4 per class
    d = data.load("cifar10", root=isolated / "c", val_fraction=0.25, seed=3)
    assert torch.bincount(d.y_val, minlength=10).tolist() == [1] * 10
    assert torch.bincount(d.y_train, minlength=10).tolist() == [3] * 10
    train, val = set(_tags(d.x_train)), set(_tags(d.x_val))
    assert not train & val and train | val == set(range(40))
    again = data.load("cifar10", root=isolated / "c", val_fraction=0.25, seed=3)
    assert torch.equal(again.x_val, d.x_val) and torch.equal(again.y_train, d.y_train)
    other = data.load("cifar10", root=isolated / "c", val_fraction=0.25, seed=4)
    assert set(_tags(other.x_val)) != val
    for x in (d.x_train, d.x_val):                          # original order is kept
        assert _tags(x) == sorted(_tags(x))


def test_train_subset_is_stratified_and_taken_before_validation(isolated):
    write_cifar_batches(isolated / "c")
    d = data.load("cifar10", root=isolated / "c", train_subset=20, val_fraction=0.5, seed=1)
    assert torch.bincount(d.y_train, minlength=10).tolist() == [1] * 10
    assert torch.bincount(d.y_val, minlength=10).tolist() == [1] * 10
    assert len(set(_tags(d.x_train)) | set(_tags(d.x_val))) == 20
    assert len(d.x_test) == 10                              # the test set is never subsampled
    odd = data.load("cifar10", root=isolated / "c", train_subset=13, val_fraction=0.0)
    assert len(odd.x_train) == 13 and torch.bincount(odd.y_train).max() <= 2


def test_cache_hit_is_identical_and_a_changed_source_rebuilds(isolated, monkeypatch):
    folder = isolated / "c"
    write_cifar_batches(folder, seed=0)
    first = data.load("cifar10", root=folder)
    assert (isolated / "cache" / "datasets" / "cifar10-batches.npz").is_file()

    def refuse(files):
        raise AssertionError("decoded again despite a valid cache")

    decoder = data._read_cifar_batches
    monkeypatch.setattr(data, "_read_cifar_batches", refuse)
    second = data.load("cifar10", root=folder)
    for field in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert torch.equal(getattr(first, field), getattr(second, field))
    assert second.source == first.source and second.mean == first.mean
    monkeypatch.setattr(data, "_read_cifar_batches", decoder)
    write_cifar_batches(folder, seed=7)                     # same names, new pixels
    third = data.load("cifar10", root=folder)
    assert not torch.equal(third.x_test, first.x_test)
    assert third.source != first.source                    # the sha256 prefix changed


def test_corrupt_cache_is_rebuilt(isolated):
    folder = isolated / "fm"
    write_idx(folder, gz=True)
    first = data.load("fashion_mnist", root=folder)
    (isolated / "cache" / "datasets" / "fashion_mnist-idx.npz").write_bytes(b"not a zip")
    assert torch.equal(data.load("fashion_mnist", root=folder).x_train, first.x_train)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"val_fraction": -0.1}, "val_fraction"),
        ({"val_fraction": "0.1"}, "val_fraction"),
        ({"seed": 1.5}, "seed"),
        ({"train_subset": 0}, "train_subset"),
        ({"train_subset": 2.5}, "train_subset"),
        ({"train_subset": True}, "train_subset"),
        ({"train_subset": 5}, "train_subset"),        # fewer than one per class
        ({"train_subset": 41}, "train_subset"),       # more than the training set
    ],
)
def test_load_rejects_bad_values(isolated, kwargs, field):
    write_cifar_batches(isolated / "c")
    with pytest.raises(ValueError, match=f"'{field}' parameter of load") as info:
        data.load("cifar10", root=isolated / "c", **kwargs)
    assert "Got" in str(info.value)


def test_load_rejects_unknown_name():
    with pytest.raises(ValueError, match="Unknown dataset 'cifar'; expected one of 'cifar10', 'svhn'"):
        data.load("cifar")


# --------------------------------------------------------------------------- real copies

@pytest.fixture(scope="module")
def digits() -> data.ImageData:
    return data.load("digits")


def test_digits_real(digits):
    assert digits.x_train.shape[1:] == (1, 8, 8) and digits.x_train.dtype == torch.uint8
    total = len(digits.x_train) + len(digits.x_val) + len(digits.x_test)
    assert total == 1797
    assert len(digits.x_test) == 451                        # a stratified 25%, per class rounded
    assert int(digits.x_train.max()) == 255 and int(digits.x_train.min()) == 0
    counts = torch.bincount(torch.cat([digits.y_train, digits.y_val]), minlength=10)
    expected = torch.floor(counts * 0.1 + 0.5).long()
    assert torch.equal(torch.bincount(digits.y_val, minlength=10), expected)
    # the test split is fixed; the seed moves only the validation split
    other = data.load("digits", seed=1)
    assert torch.equal(other.x_test, digits.x_test) and not torch.equal(other.y_val, digits.y_val)
    assert "scikit-learn" in digits.source


def test_fashion_mnist_real():
    try:
        d = data.load("fashion_mnist")
    except FileNotFoundError:
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    assert (len(d.x_train), len(d.x_val), len(d.x_test)) == (54000, 6000, 10000)
    assert d.x_train.shape[1:] == (1, 28, 28)
    assert torch.bincount(d.y_val).tolist() == [600] * 10
    assert d.num_classes == 10
    everything = data.load("fashion_mnist", val_fraction=0.0)
    assert everything.y_train[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]   # as upstream
    subset = data.load("fashion_mnist", train_subset=20000)
    assert len(subset.x_train) + len(subset.x_val) == 20000
    assert torch.bincount(subset.y_val).tolist() == [200] * 10


@pytest.mark.slow
def test_cifar10_jpeg_copy_real():
    if not (shared_datasets_dir() / data.CIFAR10_JPEG_NAME).is_file():
        pytest.skip("the CIFAR-10 JPEG copy is not in ../shared/datasets")
    d = data.load("cifar10")
    assert (len(d.x_train), len(d.x_val), len(d.x_test)) == (45000, 5000, 10000)
    assert d.x_train.shape[1:] == (3, 32, 32) and d.num_classes == 10
    assert torch.bincount(d.y_test).tolist() == [1000] * 10
    assert torch.bincount(d.y_val).tolist() == [500] * 10
    if "JPEG copy" in d.source:
        assert "lossy" in d.source and "097287809041" in d.source
    assert all(0.4 < m < 0.5 for m in d.mean) and all(0.2 < s < 0.3 for s in d.std)


# --------------------------------------------------------------------------- forgetting scenarios

def _check_partition(split: data.ForgetSplit, n: int) -> None:
    f, r = split.forget_idx, split.retain_idx
    assert f.dtype == torch.int64 and r.dtype == torch.int64
    assert torch.equal(f, torch.sort(f).values) and torch.equal(r, torch.sort(r).values)
    assert torch.equal(torch.sort(torch.cat([f, r])).values, torch.arange(n))


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.33])
def test_random_scenario(digits, fraction):
    n = len(digits.y_train)
    split = data.forget_split(digits, "random", fraction=fraction, seed=5)
    assert split.scenario == "random"
    assert len(split.forget_idx) == int(np.floor(fraction * n + 0.5))
    _check_partition(split, n)
    assert split.test_keep.dtype == torch.bool and bool(split.test_keep.all())
    assert len(split.test_keep) == len(digits.y_test)
    again = data.forget_split(digits, "random", fraction=fraction, seed=5)
    assert again.indices_hash == split.indices_hash
    assert torch.equal(again.forget_idx, split.forget_idx)
    other = data.forget_split(digits, "random", fraction=fraction, seed=6)
    assert other.indices_hash != split.indices_hash
    assert len(split.indices_hash) == 16


@settings(max_examples=25, deadline=None)
@given(fraction=st.floats(0.01, 0.99), seed=st.integers(0, 2**31))
def test_random_scenario_properties(digits, fraction, seed):
    split = data.forget_split(digits, "random", fraction=fraction, seed=seed)
    _check_partition(split, len(digits.y_train))


def test_class_scenario(digits):
    split = data.forget_split(digits, "class", cls=3)
    assert torch.equal(split.forget_idx, torch.nonzero(digits.y_train == 3).flatten())
    _check_partition(split, len(digits.y_train))
    assert bool((digits.y_train[split.retain_idx] != 3).all())
    assert torch.equal(split.test_keep, digits.y_test != 3)
    assert data.forget_split(digits, "class", cls=3, seed=9).indices_hash == split.indices_hash
    assert data.forget_split(digits, "class", cls=4).indices_hash != split.indices_hash


@pytest.mark.parametrize(
    "scenario, kwargs, message",
    [
        ("rand", {"fraction": 0.1}, "Unknown scenario 'rand'; expected one of 'random', 'class'"),
        ("random", {}, "'fraction' parameter of forget_split must be a float in the open interval"),
        ("random", {"fraction": 0.0}, "Got 0.0 instead"),
        ("random", {"fraction": 1.0}, "Got 1.0 instead"),
        ("random", {"fraction": 1.5}, "Got 1.5 instead"),
        ("random", {"fraction": True}, "'fraction'"),
        ("random", {"fraction": 1e-6}, "gives 0 of"),
        ("random", {"fraction": 0.1, "cls": 2}, "'cls' parameter of forget_split is only for scenario 'class'"),
        ("random", {"fraction": 0.1, "seed": "a"}, "'seed' parameter of forget_split must be an int"),
        ("class", {}, "'cls' parameter of forget_split must be a class index"),
        ("class", {"cls": -1}, "Got -1 instead"),
        ("class", {"cls": 10}, r"\[0, 10\)"),
        ("class", {"cls": 1.0}, "Got 1.0 instead"),
        ("class", {"cls": 1, "fraction": 0.1}, "'fraction' parameter of forget_split is only for scenario 'random'"),
    ],
)
def test_forget_split_rejects_bad_values(digits, scenario, kwargs, message):
    with pytest.raises(ValueError, match=message):
        data.forget_split(digits, scenario, **kwargs)


def test_forget_split_wants_image_data():
    with pytest.raises(TypeError, match="ImageData"):
        data.forget_split({"x_train": None}, "random", fraction=0.1)


# --------------------------------------------------------------------------- augment, batches

def _images(n: int = 16, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(1, 256, (n, 3, 8, 8), generator=generator, dtype=torch.uint8)


def test_augment_keeps_shape_dtype_and_input():
    x = _images()
    before = x.clone()
    out = data.augment(x, "crop_flip", torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8 and out.device == x.device
    assert torch.equal(x, before)


def test_augment_is_seeded():
    x = _images(64)
    a = data.augment(x, "crop_flip", torch.Generator().manual_seed(1))
    b = data.augment(x, "crop_flip", torch.Generator().manual_seed(1))
    c = data.augment(x, "crop_flip", torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_augment_none_is_identity():
    x = _images()
    assert torch.equal(data.augment(x, "none", torch.Generator().manual_seed(0)), x)


def test_crop_flip_is_a_crop_of_the_zero_padded_image():
    x = _images(32)
    out = data.augment(x, "crop_flip", torch.Generator().manual_seed(3))
    padded = F.pad(x, (4, 4, 4, 4))
    seen_flip, seen_offsets = set(), set()
    for i in range(len(x)):
        matches = []
        for dy in range(9):
            for dx in range(9):
                crop = padded[i, :, dy:dy + 8, dx:dx + 8]
                matches += [(dy, dx, False)] if torch.equal(out[i], crop) else []
                matches += [(dy, dx, True)] if torch.equal(out[i], crop.flip(-1)) else []
        assert matches, f"image {i} is not a crop of its padded original"
        seen_flip |= {m[2] for m in matches}
        seen_offsets |= {m[:2] for m in matches}
    assert seen_flip == {False, True} and len(seen_offsets) > 5


def test_augment_rejects_bad_inputs():
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="Unknown augmentation policy 'flip'; expected one of 'none', 'crop_flip'"):
        data.augment(_images(), "flip", g)
    with pytest.raises(TypeError, match="uint8"):
        data.augment(_images().float(), "crop_flip", g)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        data.augment(_images()[0], "crop_flip", g)
    with pytest.raises(TypeError, match="torch.Generator"):
        data.augment(_images(), "crop_flip", 0)


@pytest.mark.parametrize("n, size, drop_last", [(10, 3, False), (10, 3, True), (9, 3, True), (0, 4, False)])
def test_batches_cover_every_index_once(n, size, drop_last):
    parts = list(data.batches(n, size, torch.Generator().manual_seed(0), drop_last=drop_last))
    assert all(p.dtype == torch.int64 and len(p) <= size for p in parts)
    seen = torch.cat(parts) if parts else torch.empty(0, dtype=torch.int64)
    assert len(set(seen.tolist())) == len(seen)
    if drop_last:
        assert all(len(p) == size for p in parts) and len(seen) == n - n % size
    else:
        assert torch.equal(torch.sort(seen).values, torch.arange(n))


def test_batches_are_seeded_and_ordered_without_shuffle():
    a = torch.cat(list(data.batches(50, 7, torch.Generator().manual_seed(4))))
    b = torch.cat(list(data.batches(50, 7, torch.Generator().manual_seed(4))))
    assert torch.equal(a, b) and not torch.equal(a, torch.arange(50))
    plain = torch.cat(list(data.batches(50, 7, None, shuffle=False)))
    assert torch.equal(plain, torch.arange(50))


def test_batches_rejects_bad_values():
    g = torch.Generator()
    with pytest.raises(ValueError, match="'batch_size' parameter of batches must be an int >= 1. Got 0"):
        data.batches(10, 0, g)
    with pytest.raises(ValueError, match="'n' parameter of batches"):
        data.batches(-1, 2, g)
    with pytest.raises(TypeError, match="torch.Generator"):
        data.batches(10, 2, None)
