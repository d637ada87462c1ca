"""Datasets: the registry contract, user files and folders, and every bad input."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from automl_core.errors import DatasetError
from automl_core.model.datasets import DATASETS, load_dataset, offline_dataset_names


@pytest.mark.parametrize("name", offline_dataset_names())
class TestOfflineRegistryContract:
    def test_images_are_float_unit_nhwc(self, name):
        data = load_dataset(name, max_images=60)
        for x in (data.x_train, data.x_val, data.x_test):
            assert x.dtype == np.float32 and x.ndim == 4
            assert 0.0 <= x.min() and x.max() <= 1.0
        assert data.input_shape[2] in (1, 3)
        assert data.num_images == 60

    def test_labels_and_names(self, name):
        data = load_dataset(name, max_images=60)
        assert data.has_labels and len(data.y_train) == len(data.x_train)
        assert data.class_names and max(data.y_train) < len(data.class_names)

    def test_splits_are_deterministic_and_disjoint(self, name):
        a = load_dataset(name, seed=3, max_images=60)
        b = load_dataset(name, seed=3, max_images=60)
        np.testing.assert_array_equal(a.x_test, b.x_test)
        c = load_dataset(name, seed=4, max_images=60)
        assert not np.array_equal(a.x_test, c.x_test)


def test_mnist_5k_is_shuffled_and_sized():
    data = load_dataset("mnist-5k")
    assert data.input_shape == (28, 28, 1) and data.num_images == 5000
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (4000, 500, 500)
    assert len(set(data.y_train[:50].tolist())) > 5  # the shipped file is sorted by class


def test_patches_are_rgb():
    assert load_dataset("patches", max_images=10).input_shape == (32, 32, 3)


def test_downloaded_dataset_offline_names_offline_ones(monkeypatch):
    import keras

    def refuse():
        raise OSError("network is unreachable")

    monkeypatch.setattr(keras.datasets.fashion_mnist, "load_data", refuse)
    DATASETS["fashion-mnist"].load.cache_clear()
    with pytest.raises(DatasetError, match="could not be downloaded.*mnist-5k, digits, patches"):
        load_dataset("fashion-mnist")


def test_unknown_name():
    with pytest.raises(DatasetError, match="unknown dataset 'mnist5k'; expected one of mnist-5k"):
        load_dataset("mnist5k")


def test_missing_path(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(str(tmp_path / "nope.npz"))


def _npz(tmp_path, **arrays):
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return str(path)


def test_npz_round_trip_with_labels(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (30, 12, 10), dtype=np.uint8)
    y = np.arange(30) % 3
    data = load_dataset(_npz(tmp_path, x=x, y=y, class_names=np.array(["a", "b", "c"])))
    assert data.input_shape == (12, 10, 1) and data.class_names == ("a", "b", "c")
    assert data.x_train.max() <= 1.0


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"images": np.zeros((5, 4, 4))}, "must contain an array named 'x'"),
        ({"x": np.array([np.zeros(3), np.zeros(4)], dtype=object)}, "pickled \\(object\\) array"),
        ({"x": np.full((5, 4, 4), np.nan)}, "NaN or infinite"),
        ({"x": np.zeros(20)}, "must have shape \\(N, H, W\\) or \\(N, H, W, C\\)"),
        ({"x": np.zeros((5, 4, 4)), "y": np.zeros(4, dtype=int)}, "one label per image \\(5\\)"),
        ({"x": np.zeros((5, 4, 4, 2))}, "1 or 3 channels"),
        ({"x": np.full((5, 4, 4), 1000.0)}, "must lie in \\[0, 1\\] or \\[0, 255\\]"),
    ],
    ids=["no-x", "object", "nan", "1d", "mismatched-y", "channels", "range"],
)
def test_bad_npz(tmp_path, arrays, message):
    with pytest.raises(DatasetError, match=message):
        load_dataset(_npz(tmp_path, **arrays))


def test_not_an_npz(tmp_path):
    path = tmp_path / "broken.npz"
    path.write_bytes(b"not a zip at all")
    with pytest.raises(DatasetError, match="not a readable .npz"):
        load_dataset(str(path))


def _png(value: int, size=(9, 7), mode="L") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, value).save(buffer, format="PNG")
    return buffer.getvalue()


def test_zip_of_class_folders(tmp_path):
    path = tmp_path / "images.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(4):
            archive.writestr(f"root/cat/{i}.png", _png(10 * i))
            archive.writestr(f"root/dog/{i}.png", _png(200 - i))
        archive.writestr("__MACOSX/root/cat/._0.png", b"junk")
    data = load_dataset(str(path))
    assert data.class_names == ("cat", "dog")
    assert data.input_shape == (7, 9, 1) and data.num_images == 8


def test_folder_of_rgb_images_resized(tmp_path):
    for i in range(5):
        (tmp_path / "imgs").mkdir(exist_ok=True)
        size = (16, 16) if i else (20, 24)
        (tmp_path / "imgs" / f"{i}.png").write_bytes(_png(i, size=size, mode="RGB"))
    data = load_dataset(str(tmp_path / "imgs"))
    assert data.input_shape == (16, 16, 3) and not data.has_labels


def test_zip_without_images(tmp_path):
    path = tmp_path / "notes.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(DatasetError, match="no images found"):
        load_dataset(str(path))


def test_zip_with_corrupt_image(tmp_path):
    path = tmp_path / "bad.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a/ok.png", _png(3))
        archive.writestr("b/ok.png", _png(9))
        archive.writestr("a/broken.png", b"\x89PNG not really")
    with pytest.raises(DatasetError, match="'a/broken.png' is not a readable image"):
        load_dataset(str(path))


def test_too_few_images(tmp_path):
    with pytest.raises(DatasetError, match="at least 3"):
        load_dataset(_npz(tmp_path, x=np.zeros((2, 4, 4))))
