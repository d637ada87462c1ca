"""Uploaded datasets: size and kind checked, usable data saved, nothing kept on refusal."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from automl_core.errors import DatasetError
from automl_core.hosting import uploads
from automl_core.search import preflight


def _npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


class TestUploads:
    def test_valid_npz_is_saved_under_uploads(self, runs_dir):
        data = _npz_bytes(x=np.random.default_rng(0).random((10, 8, 8)), y=np.arange(10) % 2)
        path = uploads.save_upload("my data.npz", data)
        assert path.parent == runs_dir / "uploads" / "local" and path.name.startswith("my_data-")
        assert preflight.dataset_input_shape(str(path)) == (8, 8, 1)

    def test_pickled_object_array_is_refused(self, runs_dir):
        data = _npz_bytes(x=np.array([{"a": 1}, None], dtype=object))
        with pytest.raises(DatasetError, match="pickled"):
            uploads.save_upload("evil.npz", data)
        assert not any((runs_dir / "uploads").iterdir())

    def test_zip_without_images_is_refused(self, runs_dir):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("notes/readme.txt", "no pictures here")
        with pytest.raises(DatasetError, match="no images found"):
            uploads.save_upload("notes.zip", buffer.getvalue())

    def test_file_above_the_limit_is_refused(self, runs_dir):
        with pytest.raises(DatasetError, match="more than the 1 MiB allowed"):
            uploads.save_upload("big.npz", b"0" * (2**20 + 1), limit=2**20)

    def test_other_kinds_of_file_are_refused(self, runs_dir):
        with pytest.raises(DatasetError, match="expected an .npz file or a .zip"):
            uploads.save_upload("photo.png", b"\x89PNG")
