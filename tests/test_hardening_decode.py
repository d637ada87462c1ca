"""Hosted dashboard holes about image data and memory (issue 20).

1. The decoding work of a folder or ``.zip`` is bounded (``max_decoded_pixels``, from the
   headers) and a folder or ``.zip`` is decoded once: every later load of the same content
   reads the decoded cache under ``<runs>/cache/datasets``, which stays within its size.
2. The Activations page's uploader refuses over-limit files in the browser and lets go of
   an upload's bytes once it has decoded them.
3. The Overview shows a study's first test images without loading its whole dataset.
"""

from __future__ import annotations

import io
import os
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile
from streamlit.testing.v1 import AppTest

from automl_core import limits
from automl_core.errors import DatasetError
from automl_core.hosting import uploads
from automl_core.model import datasets
from automl_core.model.datasets import first_test_images, load_arrays, load_dataset, load_notes

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 120


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _zip(path: Path, count: int = 12, side: int = 10, seed: int = 0) -> str:
    """A .zip of small grayscale PNGs in two class folders."""
    rng = np.random.default_rng(seed)
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(count):
            pixels = rng.integers(0, 255, (side, side), np.uint8)
            archive.writestr(f"{'ab'[i % 2]}/{i:02d}.png", _png(pixels))
    return str(path)


@pytest.fixture
def decodes(monkeypatch):
    """Counts the images decoded (each goes through ``image_to_unit_array`` once)."""
    calls = []
    real = datasets.image_to_unit_array

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(datasets, "image_to_unit_array", counting)
    return calls


@pytest.fixture
def no_demo(monkeypatch, tmp_path):
    """Keeps the bundled demo study out of the storage the test reads."""
    from dashboard import state

    monkeypatch.setattr(state, "DEMO_DIR", tmp_path / "no-demo")


# --- 1. the decoding work is bounded, and done once ----------------------------------------------


@pytest.mark.parametrize("kind", ["zip", "folder"])
def test_total_pixels_are_refused_from_the_headers(kind, tmp_path, runs_dir, monkeypatch):
    source = _zip(tmp_path / "big.zip", count=4, side=20)
    if kind == "folder":
        with zipfile.ZipFile(source) as archive:
            archive.extractall(tmp_path / "big")
        source = str(tmp_path / "big")
    monkeypatch.setenv("AUTOML_MAX_DECODED_PIXELS", "1000")

    def refuse(self):
        raise AssertionError("an image was decoded before the total was checked")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    with pytest.raises(DatasetError) as caught:
        load_arrays(source)
    message = str(caught.value)
    assert "4 images hold 1,600 pixels (width x height) together" in message
    assert "more than the 1,000 allowed" in message and "AUTOML_MAX_DECODED_PIXELS" in message
    assert not datasets.decoded_cache_dir().exists() or not any(
        datasets.decoded_cache_dir().glob("*.npy")
    )


def test_the_limit_has_a_documented_default():
    assert limits.LIMITS["max_decoded_pixels"].default == 400_000_000
    assert limits.LIMITS["max_decoded_pixels"].env == "AUTOML_MAX_DECODED_PIXELS"


def test_a_zip_is_decoded_once_however_often_it_is_loaded(tmp_path, runs_dir, decodes):
    source = _zip(tmp_path / "data.zip")
    x, y, names = load_arrays(source)
    assert len(decodes) == 12
    again, y_again, names_again = load_arrays(source)
    load_dataset(source, seed=3)
    first_test_images(source, 2, seed=3)
    assert len(decodes) == 12  # every later load read the cache
    assert np.array_equal(np.asarray(x), np.asarray(again)) and np.array_equal(y, y_again)
    assert names == names_again == ("a", "b")
    # the same content under another name (an upload's final name) is the same entry
    copy = tmp_path / "copy.zip"
    shutil.copy(source, copy)
    load_arrays(str(copy))
    assert len(decodes) == 12
    assert load_notes(copy).source == str(copy) and load_notes(copy).num_images == 12


def test_the_cache_is_plain_arrays_written_whole(tmp_path, runs_dir):
    load_arrays(_zip(tmp_path / "data.zip"))
    folder = datasets.decoded_cache_dir()
    assert folder == runs_dir.resolve() / "cache" / "datasets"
    images = list(folder.glob("*.npy"))
    metas = list(folder.glob("*.meta.npz"))
    assert len(images) == len(metas) == 1
    assert not list(folder.glob("*.partial.*"))
    assert np.load(images[0], allow_pickle=False).shape == (12, 10, 10, 1)
    with np.load(metas[0], allow_pickle=False) as meta:
        assert set(meta.files) == {"notes", "y", "class_names"}


def test_a_folder_is_decoded_once_and_again_when_it_changes(tmp_path, runs_dir, decodes):
    folder = tmp_path / "images"
    with zipfile.ZipFile(_zip(tmp_path / "data.zip", count=6)) as archive:
        archive.extractall(folder)
    load_arrays(str(folder))
    load_arrays(str(folder))
    assert len(decodes) == 6
    (folder / "a" / "00.png").write_bytes(_png(np.zeros((10, 10), np.uint8)))
    x, _, _ = load_arrays(str(folder))
    assert len(decodes) == 12 and float(x[0].max()) == 0.0


def test_a_decoding_limit_makes_another_entry(tmp_path, runs_dir, decodes, monkeypatch):
    source = _zip(tmp_path / "data.zip", side=12)
    assert load_arrays(source)[0].shape[1:] == (12, 12, 1)
    monkeypatch.setenv("AUTOML_MAX_IMAGE_SIDE", "6")
    assert load_arrays(source)[0].shape[1:] == (6, 6, 1)
    assert len(decodes) == 24
    monkeypatch.setenv("AUTOML_MAX_DECODED_PIXELS", "100")  # lowered: refused, not bypassed
    with pytest.raises(DatasetError, match="AUTOML_MAX_DECODED_PIXELS"):
        load_arrays(source)


def test_a_damaged_entry_is_decoded_again(tmp_path, runs_dir, decodes):
    source = _zip(tmp_path / "data.zip")
    first, _, _ = load_arrays(source)
    expected = np.array(first)
    del first
    for path in datasets.decoded_cache_dir().glob("*.npy"):
        path.write_bytes(b"not an array")
    again, _, _ = load_arrays(source)
    assert len(decodes) == 24 and np.array_equal(expected, np.asarray(again))


def test_the_cache_keeps_the_most_recently_used_within_its_size(tmp_path, runs_dir, monkeypatch):
    first = _zip(tmp_path / "first.zip", seed=1)
    second = _zip(tmp_path / "second.zip", seed=2)
    load_arrays(first)
    folder = datasets.decoded_cache_dir()
    one_entry = sum(p.stat().st_size for p in folder.iterdir())
    monkeypatch.setenv("AUTOML_MAX_DECODED_CACHE_BYTES", str(int(one_entry * 1.5)))
    (first_key,) = {p.name.split(".")[0] for p in folder.glob("*.npy")}
    stale = folder / "0123.99.dead.partial.npy"
    stale.write_bytes(b"x" * 10)
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    load_arrays(second)
    keys = {p.name.split(".")[0] for p in folder.glob("*.npy")}
    assert len(keys) == 1 and first_key not in keys  # the older entry made room
    assert not stale.exists()
    total = sum(p.stat().st_size for p in folder.iterdir())
    assert total <= limits.get("max_decoded_cache_bytes")


def test_an_unwritable_runs_folder_still_loads(tmp_path, monkeypatch, decodes):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the runs folder should be")
    monkeypatch.setenv("AUTOML_HOME", str(blocker))
    source = _zip(tmp_path / "data.zip")
    x, y, _ = load_arrays(source)
    assert x.shape == (12, 10, 10, 1) and len(y) == 12 and len(decodes) == 12


@pytest.mark.slow  # the upload check runs in a child process
def test_an_upload_check_decodes_for_every_later_load(tmp_path, runs_dir, decodes):
    data = Path(_zip(tmp_path / "data.zip")).read_bytes()
    saved = uploads.save_upload("data.zip", data)  # checked (decoded) in a child process
    x, _, _ = load_arrays(str(saved))
    first_test_images(str(saved), 3)
    assert len(decodes) == 0  # the child's decoding was kept: this process decoded nothing
    assert x.shape == (12, 10, 10, 1)


# --- 3. a few test images without the whole dataset ----------------------------------------------


@pytest.mark.parametrize(
    "array",
    [
        np.random.default_rng(0).integers(0, 255, (50, 8, 8), np.uint8),
        np.random.default_rng(1).random((50, 8, 8, 3)).astype(np.float32),
        (np.random.default_rng(2).random((50, 8, 8, 1)) * 200).astype(np.float64),
        np.random.default_rng(3).random((40, 6, 6)) > 0.5,
    ],
    ids=["uint8", "float01", "float255", "bool"],
)
@pytest.mark.parametrize("max_images", [None, 20])
def test_first_test_images_equal_the_split(array, max_images, tmp_path, runs_dir):
    path = tmp_path / "data.npz"
    np.savez_compressed(path, x=array)
    expected = load_dataset(str(path), seed=4, max_images=max_images).x_test[:3]
    got = first_test_images(str(path), 3, seed=4, max_images=max_images)
    assert got.dtype == np.float32 and np.array_equal(expected, got)


@pytest.mark.parametrize("source", ["digits", "zip"])
def test_first_test_images_of_a_registry_dataset_and_a_zip(source, tmp_path, runs_dir):
    if source == "zip":
        source = _zip(tmp_path / "data.zip", count=30)
    expected = load_dataset(source, seed=5).x_test[:4]
    assert np.array_equal(expected, first_test_images(source, 4, seed=5))


def test_first_test_images_of_an_npz_never_read_the_whole_array(tmp_path, runs_dir, monkeypatch):
    path = tmp_path / "data.npz"
    np.savez(path, x=np.random.default_rng(0).integers(0, 255, (100, 8, 8), np.uint8))
    expected = load_dataset(str(path)).x_test[:5]

    def refuse(*args, **kwargs):
        raise AssertionError("the whole array was read")

    monkeypatch.setattr(datasets, "_read_npz", refuse)
    monkeypatch.setattr(np.lib.format, "read_array", refuse)
    assert np.array_equal(expected, first_test_images(str(path), 5))


@pytest.mark.parametrize("count", [0, -1, 2.5, True])
def test_first_test_images_need_a_positive_count(count):
    with pytest.raises(DatasetError, match="count must be a positive integer, got count="):
        first_test_images("digits", count)


def test_the_overview_shows_test_images_without_loading_the_dataset(
    tiny_study_home, runs_dir, no_demo, monkeypatch
):
    from automl_core.storage import store

    shutil.copytree(tiny_study_home, runs_dir)
    study = store.load_study("tiny", store.default_storage_url())
    study.set_user_attr(store.ARTIFACT_ROOT_ATTR, str(runs_dir / "artifacts"))
    settings = study.user_attrs[store.SETTINGS_ATTR]
    x, y, _ = datasets.DATASETS["digits"].load()
    path = runs_dir / "digits.npz"
    np.savez(path, x=x, y=y)  # the study's own images, now as a file
    study.set_user_attr(store.SETTINGS_ATTR, {**settings, "dataset": str(path)})

    def refuse(*args, **kwargs):
        raise AssertionError("the whole dataset was loaded into the server")

    monkeypatch.setattr(datasets, "_read_npz", refuse)
    at = AppTest.from_file(str(ROOT / "pages" / "overview.py"), default_timeout=TIMEOUT)
    at.session_state["study"] = "tiny"
    at.run()
    assert not at.exception, at.exception
    assert not at.warning, [w.value for w in at.warning]
    assert "Test images (top) and their reconstructions (bottom)" in [m.value for m in at.markdown]
    assert len(at.get("image")) == 2  # originals and reconstructions


# --- 2. the Activations page's uploads ----------------------------------------------------------


def _activations() -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / "activations.py"), default_timeout=TIMEOUT)
    at.session_state["study"] = "tiny"
    at.run()
    at.segmented_control(key="act_source").set_value("Upload").run()
    assert not at.exception, at.exception
    return at


def test_the_uploader_refuses_over_limit_files_in_the_browser(tiny_study, no_demo, monkeypatch):
    at = _activations()
    assert at.file_uploader(key="act_upload").proto.max_upload_size_mb == 10
    monkeypatch.setenv("AUTOML_MAX_ACTIVATION_UPLOAD_BYTES", str(3 * limits.MIB + 1))
    at = _activations()
    assert at.file_uploader(key="act_upload").proto.max_upload_size_mb == 4  # rounded up
    assert "at most 4 MB" in at.file_uploader(key="act_upload").label


def test_an_over_limit_upload_is_refused_unread(tiny_study, no_demo, monkeypatch):
    from automl_core.analysis import inspect

    def refuse(*args, **kwargs):
        raise AssertionError("an over-limit upload was decoded")

    monkeypatch.setattr(inspect, "image_from_bytes", refuse)
    monkeypatch.setenv("AUTOML_MAX_ACTIVATION_UPLOAD_BYTES", "1000")
    at = _activations()
    big = _png(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8))
    at.file_uploader(key="act_upload").upload("big.png", big, "image/png").run()
    assert not at.exception, at.exception
    errors = " | ".join(e.value for e in at.error)
    assert f"the uploaded file has {len(big):,} bytes; at most 1,000 are accepted" in errors
    assert "AUTOML_MAX_ACTIVATION_UPLOAD_BYTES" in errors


def test_an_upload_is_decoded_once_and_its_bytes_let_go(tiny_study, no_demo):
    at = _activations()
    png = _png(np.full((30, 40, 3), 200, np.uint8))
    at.file_uploader(key="act_upload").upload("photo.png", png, "image/png").run()
    assert not at.exception, at.exception
    assert {m.label for m in at.metric} >= {"PSNR", "SSIM"}
    assert at.session_state["act_upload"].getvalue() == b""  # the widget keeps no bytes
    taken = at.session_state["act_upload_image"]
    assert taken["name"] == "photo.png" and taken["image"].dtype == np.float32
    assert not any(isinstance(v, bytes) for v in taken.values())
    at.run()  # a rerun uses the decoded image
    assert not at.exception and {m.label for m in at.metric} >= {"PSNR", "SSIM"}
    assert "photo.png" in str(at.get("plotly_chart")[0].proto.spec)


def _held_uploads_page() -> None:
    """The uploader alone, then how many uploads the server still holds for this session."""
    import streamlit as st
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    from dashboard import inspect_widgets as iw

    image, name = iw.uploaded_image("Image", "up", (8, 8, 1))
    ctx = get_script_run_ctx()
    st.write(f"held={len(ctx.uploaded_file_mgr.file_storage.get(ctx.session_id, {}))}")
    st.write(f"image={None if image is None else image.shape}")


def test_the_server_lets_go_of_an_upload_once_decoded():
    at = AppTest.from_function(_held_uploads_page, default_timeout=TIMEOUT).run()
    png = _png(np.full((16, 16), 9, np.uint8))
    at.file_uploader(key="up").upload("a.png", png, "image/png").run()
    assert not at.exception, at.exception
    shown = [m.value for m in at.markdown]
    assert "held=0" in shown and "image=(8, 8, 1)" in shown
    at.file_uploader(key="up").clear().run()
    assert "image=None" in [m.value for m in at.markdown]
