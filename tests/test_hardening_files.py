"""Hostile and unlucky files (issue 10): each ends in one clear DatasetError, nothing lost.

Every bomb is made here, small: limits are lowered through their environment variables so
that a few kilobytes stand for gigabytes, and the refusals are checked to happen before any
data is read (the readers that would decode it are replaced by ones that fail the test).
"""

from __future__ import annotations

import io
import os
import stat
import struct
import sys
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from automl_core.errors import DatasetError
from automl_core.hosting import uploads
from automl_core.model import datasets
from automl_core.model.datasets import LoadNotes, load_dataset, load_notes

# --- making files ------------------------------------------------------------------------------


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _npy_header(shape: tuple[int, ...], dtype: str) -> bytes:
    """Only the .npy header of an array of this shape, as a bomb's first bytes."""
    buffer = io.BytesIO()
    descr = np.lib.format.dtype_to_descr(np.dtype(dtype))
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


def _zip(path, members: dict[str, bytes], compression=zipfile.ZIP_STORED) -> str:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return str(path)


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(array) if mode is None else Image.new(mode, array, 7)
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _gray(value: int = 90, size: tuple[int, int] = (8, 8)) -> bytes:
    return _png(np.full(size, value, np.uint8))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height; its pixel data is a few bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _patch_zip(path, *, flags: int = 0, method: int | None = None, corrupt: bool = False) -> None:
    """Rewrites a written .zip in place: sets flag bits, the method, or flips a data byte."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
    for info in infos:
        local = info.header_offset
        name_len, extra_len = struct.unpack("<HH", data[local + 26 : local + 30])
        if corrupt:
            data[local + 30 + name_len + extra_len + info.compress_size - 1] ^= 0xFF
        struct.pack_into("<H", data, local + 6, info.flag_bits | flags)
        if method is not None:
            struct.pack_into("<H", data, local + 8, method)
    central = data.find(b"PK\x01\x02")
    while central != -1:
        flag_bits = struct.unpack("<H", data[central + 8 : central + 10])[0]
        struct.pack_into("<H", data, central + 8, flag_bits | flags)
        if method is not None:
            struct.pack_into("<H", data, central + 10, method)
        central = data.find(b"PK\x01\x02", central + 4)
    path.write_bytes(bytes(data))


@pytest.fixture
def no_decoding(monkeypatch):
    """Fails the test if any array data or image pixels are read."""

    def refuse(*args, **kwargs):
        raise AssertionError("data was read before the refusal")

    monkeypatch.setattr(np.lib.format, "read_array", refuse)
    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


# --- 1. an .npz that declares gigabytes ------------------------------------------------------


def test_npz_header_declaring_terabytes_is_refused_before_reading(tmp_path, no_decoding):
    bomb = _npy_header((100000, 4096, 4096), "|u1") + b"\0" * 16
    path = _zip(tmp_path / "bomb.npz", {"x.npy": bomb})
    with pytest.raises(
        DatasetError,
        match=r"bomb.npz: 'x' declares shape \(100000, 4096, 4096\) = 6.1 TiB, more than the "
        r"2 GiB allowed \(AUTOML_MAX_DATASET_BYTES\)",
    ):
        load_dataset(path)


def test_compressed_zeros_over_the_budget_are_refused_from_the_header(
    tmp_path, monkeypatch, no_decoding
):
    monkeypatch.setenv("AUTOML_MAX_DATASET_BYTES", str(2**20))
    data = _npy(np.zeros((1, 1024, 1024), np.uint8))  # 1 MiB, 4 MiB as float32
    path = _zip(tmp_path / "zeros.npz", {"x.npy": data}, zipfile.ZIP_DEFLATED)
    assert os.path.getsize(path) < 20_000
    with pytest.raises(DatasetError, match=r"= 4 MiB, more than the 1 MiB allowed"):
        load_dataset(path)


def test_labels_that_do_not_match_the_images_are_refused_from_the_header(tmp_path, no_decoding):
    members = {"x.npy": _npy(np.zeros((5, 4, 4))), "y.npy": _npy_header((10**9,), "<i8")}
    with pytest.raises(DatasetError, match=r"'y' must have one label per image \(5\)"):
        load_dataset(_zip(tmp_path / "labels.npz", members))


# --- 2. a .zip of images: pixel counts, Pillow's bomb check, huge members, total budget --------


def test_image_over_the_pixel_limit_is_refused_from_its_header(tmp_path, monkeypatch, no_decoding):
    monkeypatch.setenv("AUTOML_MAX_IMAGE_PIXELS", "1000")
    path = _zip(tmp_path / "big.zip", {"a.png": _gray(size=(40, 50)), "b.png": _gray()})
    with pytest.raises(
        DatasetError,
        match=r"'a.png' is 50x40 = 2,000 pixels, more than the 1,000 allowed "
        r"\(AUTOML_MAX_IMAGE_PIXELS\)",
    ):
        load_dataset(path)


def test_pillow_decompression_bomb_is_a_clear_refusal(tmp_path, no_decoding):
    path = _zip(tmp_path / "huge.zip", {"a.png": _png_header_only(20000, 20000)})
    with pytest.raises(DatasetError, match=r"'a.png' has more pixels than Pillow opens safely"):
        load_dataset(path)


def test_huge_member_is_refused_from_the_zip_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOML_MAX_IMAGE_FILE_BYTES", str(2**20))
    path = _zip(tmp_path / "zeros.zip", {"zeros.png": b"\0" * 2**21}, zipfile.ZIP_DEFLATED)

    def refuse(*args, **kwargs):
        raise AssertionError("a member was opened before the refusal")

    monkeypatch.setattr(zipfile.ZipFile, "open", refuse)
    with pytest.raises(
        DatasetError,
        match=r"'zeros.png' is 2 MiB, more than the 1 MiB allowed for one image "
        r"\(AUTOML_MAX_IMAGE_FILE_BYTES\)",
    ):
        load_dataset(path)


def test_total_decoded_size_has_a_budget(tmp_path, monkeypatch, no_decoding):
    monkeypatch.setenv("AUTOML_MAX_DATASET_BYTES", "10000")
    members = {f"{i}.png": _gray(size=(40, 40)) for i in range(10)}
    with pytest.raises(
        DatasetError, match=r"10 images of 40x40x1 = 62.5 KiB as float32, more than the 9.8 KiB"
    ):
        load_dataset(_zip(tmp_path / "many.zip", members))


def test_large_images_are_shrunk_one_at_a_time(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOML_MAX_IMAGE_SIDE", "32")
    photo = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, format="JPEG")
    members = {f"{i}.jpg": buffer.getvalue() for i in range(3)}
    data = load_dataset(_zip(tmp_path / "photos.zip", members))
    assert data.input_shape == (24, 32, 3)
    notes = load_notes(tmp_path / "photos.zip")
    assert notes.resized == 3 and notes.common_size == (300, 400)
    assert "scaled down to the max_image_side limit of 32 pixels" in notes.messages[0]


# --- 3. the upload check runs in a child process with capped memory and time ----------------


def _npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def test_upload_needing_too_much_memory_kills_only_the_child(runs_dir, monkeypatch):
    good = _npz_bytes(x=np.random.default_rng(0).random((6, 8, 8)))
    saved = uploads.save_upload("data.npz", good)
    monkeypatch.setenv("AUTOML_MAX_CHECK_MEMORY_BYTES", str(32 * 2**20))
    # past the declared-size check (tests/test_hardening_hosting.py), to reach the memory cap
    monkeypatch.setenv("AUTOML_MAX_UPLOAD_EXPANSION", "100000")
    bomb = _npz_bytes(x=np.zeros((64, 1024, 1024), np.uint8))  # 64 KiB that need 320 MiB
    assert len(bomb) < 100_000
    with pytest.raises(
        DatasetError,
        match=r"upload 'data.npz': the file needed more than 32 MiB to read "
        r"\(AUTOML_MAX_CHECK_MEMORY_BYTES\)",
    ):
        uploads.save_upload("data.npz", bomb)
    assert saved.read_bytes() == good  # nothing already saved is lost
    assert sorted(p.name for p in saved.parent.iterdir()) == [saved.name]  # no partial left


def _child_startup(tmp_path, monkeypatch, code: str) -> None:
    """Makes the checking child run ``code`` first (through a sitecustomize module)."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(code, encoding="utf-8")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "site"))


def test_upload_check_has_a_time_limit(runs_dir, tmp_path, monkeypatch):
    _child_startup(tmp_path, monkeypatch, "import time\ntime.sleep(30)\n")
    monkeypatch.setenv("AUTOML_MAX_CHECK_SECONDS", "1")
    with pytest.raises(DatasetError, match=r"took more than 1 s \(AUTOML_MAX_CHECK_SECONDS\)"):
        uploads.save_upload("slow.npz", _npz_bytes(x=np.zeros((5, 4, 4))))
    assert not any((runs_dir / "uploads").iterdir())


def test_a_killed_check_is_reported_as_memory(runs_dir, tmp_path, monkeypatch):
    _child_startup(tmp_path, monkeypatch, "import os, signal\nos.kill(os.getpid(), 9)\n")
    with pytest.raises(DatasetError, match=r"needed more than .* stopped by SIGKILL"):
        uploads.save_upload("killed.npz", _npz_bytes(x=np.zeros((5, 4, 4))))


def test_upload_refusal_names_the_users_file(runs_dir):
    with pytest.raises(DatasetError, match=r"^empty.npz: 'x' holds no images"):
        uploads.save_upload("empty.npz", _npz_bytes(x=np.zeros((0, 4, 4))))


# --- 4. files that raised tracebacks -----------------------------------------------------------


def test_empty_x(tmp_path):
    path = _zip(tmp_path / "empty.npz", {"x.npy": _npy(np.zeros((0, 8, 8), np.float32))})
    with pytest.raises(DatasetError, match=r"'x' holds no images \(shape \(0, 8, 8\)\)"):
        load_dataset(path)


def test_npy_renamed_npz(tmp_path):
    path = tmp_path / "single.npz"
    path.write_bytes(_npy(np.zeros((5, 4, 4))))
    with pytest.raises(DatasetError, match=r"is a single .npy array, not an .npz archive"):
        load_dataset(str(path))


def test_bad_crc(tmp_path):
    path = tmp_path / "crc.npz"
    _zip(path, {"x.npy": _npy(np.full((5, 4, 4), 0.5))})
    _patch_zip(path, corrupt=True)
    with pytest.raises(DatasetError, match=r"'x' is damaged \(Bad CRC-32"):
        load_dataset(str(path))


def test_member_cut_short(tmp_path):
    data = _npy(np.full((5, 4, 4), 0.5))
    path = _zip(tmp_path / "short.npz", {"x.npy": data[:-40]})
    with pytest.raises(
        DatasetError, match=r"'x' is cut short: its header declares shape \(5, 4, 4\) of float64"
    ):
        load_dataset(path)


def test_file_cut_short(tmp_path):
    path = tmp_path / "short.npz"
    _zip(path, {"x.npy": _npy(np.full((5, 4, 4), 0.5))})
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(DatasetError, match=r"not a readable .npz file"):
        load_dataset(str(path))


def test_complex_numbers(tmp_path):
    path = _zip(tmp_path / "complex.npz", {"x.npy": _npy(np.zeros((5, 4, 4), np.complex64))})
    with pytest.raises(DatasetError, match=r"'x' holds complex numbers \(dtype complex64\)"):
        load_dataset(path)


@pytest.mark.parametrize("kind", ["npz", "zip"])
def test_encrypted_member(tmp_path, kind):
    path = tmp_path / f"secret.{kind}"
    members = {"x.npy": _npy(np.zeros((5, 4, 4)))} if kind == "npz" else {"a.png": _gray()}
    _zip(path, members)
    _patch_zip(path, flags=0x1)
    with pytest.raises(DatasetError, match=r"is encrypted; expected a .zip without a password"):
        load_dataset(str(path))


@pytest.mark.parametrize("kind", ["npz", "zip"])
def test_deflate64_member(tmp_path, kind):
    path = tmp_path / f"d64.{kind}"
    members = {"x.npy": _npy(np.zeros((5, 4, 4)))} if kind == "npz" else {"a.png": _gray()}
    _zip(path, members)
    _patch_zip(path, method=9)
    with pytest.raises(DatasetError, match=r"is compressed with Deflate64, which cannot be read"):
        load_dataset(str(path))


# --- 5. images read wrongly, and what loading changed --------------------------------------


def _png16(value: int, size=(6, 5)) -> bytes:
    return _png(np.full(size, value, np.uint16))


def test_16_bit_grayscale_is_scaled_by_its_depth(tmp_path):
    folder = tmp_path / "deep"
    folder.mkdir()
    for i, value in enumerate((1000, 30000, 65535)):
        (folder / f"{i}.png").write_bytes(_png16(value))
    x, _, _ = datasets.load_arrays(str(folder))
    np.testing.assert_allclose(
        sorted(x.reshape(3, -1).mean(axis=1)), [1000 / 65535, 30000 / 65535, 1.0], rtol=1e-5
    )
    assert load_notes(folder).messages == []


def test_16_bit_grayscale_activation_upload():
    from automl_core.analysis.inspect import image_from_bytes

    image = image_from_bytes(_png16(1000, size=(8, 8)), (8, 8, 1))
    np.testing.assert_allclose(image, 1000 / 65535, rtol=1e-5)


def test_mixed_sizes_and_modes_are_reported(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    rgb = np.zeros((16, 16, 3), np.uint8)
    for i in range(3):
        (folder / f"rgb{i}.png").write_bytes(_png(rgb))
    (folder / "gray.png").write_bytes(_gray(size=(16, 16)))
    (folder / "palette.png").write_bytes(_png((20, 24), mode="P"))
    data = load_dataset(str(folder))
    assert data.input_shape == (16, 16, 3)
    notes = load_notes(str(folder) + "/")
    assert (notes.resized, notes.converted) == (1, (("L", 1), ("P", 1)))
    assert notes.messages == [
        "1 of 5 images were resized to 16x16 (the most common size)",
        "2 of 5 images were converted to RGB (from L: 1, P: 1)",
    ]
    assert LoadNotes.from_dict(notes.to_dict()) == notes


def test_uploaded_zip_notes_come_back_from_the_check(runs_dir):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(3):
            archive.writestr(f"{i}.png", _gray(size=(8, 8)))
        archive.writestr("odd.png", _gray(size=(9, 12)))
    path = uploads.save_upload("mixed.zip", buffer.getvalue())
    notes = load_notes(path)
    assert notes.source == str(path) and notes.resized == 1


@pytest.mark.skipif(sys.platform == "win32", reason="symbolic links need privileges")
def test_links_out_of_the_folder_are_not_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(_gray(255))
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.png").write_bytes(_gray(i))
    (folder / "link.png").symlink_to(outside / "secret.png")
    (folder / "more").symlink_to(outside, target_is_directory=True)
    (folder / "again.png").symlink_to(folder / "0.png")  # inside: followed
    x, _, _ = datasets.load_arrays(str(folder))
    assert len(x) == 4 and x.max() < 0.1
    assert load_notes(folder).skipped_links == 2
    assert "2 symbolic link(s) were skipped" in load_notes(folder).messages[0]


def test_links_inside_a_zip_are_skipped(tmp_path):
    path = tmp_path / "links.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(3):
            archive.writestr(f"{i}.png", _gray(i))
        link = zipfile.ZipInfo("link.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    assert len(datasets.load_arrays(str(path))[0]) == 3
    assert load_notes(path).skipped_links == 1
