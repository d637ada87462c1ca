"""Datasets uploaded from the dashboard: size and kind checked, then saved where searches read.

An upload is written to a hidden partial file, loaded once to prove it is a usable dataset,
and only then moved to its final name, so a bad file never replaces a good one.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from automl_core import limits, store
from automl_core.datasets import load_arrays
from automl_core.errors import DatasetError

UPLOAD_SUFFIXES = (".npz", ".zip")


def uploads_dir() -> Path:
    """The folder uploaded datasets are saved to: ``<runs>/uploads``."""
    return store.runs_home() / "uploads"


def save_upload(filename: str, data: bytes, limit: int | None = None) -> Path:
    """Saves an uploaded dataset under :func:`uploads_dir` after checking it loads.

    Args:
        filename: The name the user's file had (only its last part and safe characters
            are kept).
        data: The file's bytes.
        limit: Largest accepted size in bytes. Defaults to the ``max_upload_bytes`` limit.

    Returns:
        The saved file's path, usable as ``--dataset``.

    Raises:
        DatasetError: The file is too large, of another kind, or not a usable dataset
            (nothing is kept then).
    """
    limit = limits.get("max_upload_bytes") if limit is None else limit
    if len(data) > limit:
        raise DatasetError(
            f"upload '{filename}' is {len(data) / limits.MIB:.1f} MiB, more than the "
            f"{limit / limits.MIB:.0f} MiB allowed"
        )
    suffix = Path(filename).suffix.lower()
    if suffix not in UPLOAD_SUFFIXES:
        raise DatasetError(
            f"upload '{filename}': expected an .npz file or a .zip of images, "
            f"got '{suffix or filename}'"
        )
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", Path(filename).stem).lstrip(".")[:60] or "upload"
    folder = uploads_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{stem}{suffix}"
    partial = folder / f".{stem}.{os.getpid()}.part{suffix}"
    partial.write_bytes(data)
    try:
        x, _, _ = load_arrays(str(partial))
    except DatasetError as exc:
        partial.unlink(missing_ok=True)
        raise DatasetError(str(exc).replace(str(partial), filename)) from None
    if len(x) < 3:
        partial.unlink(missing_ok=True)
        raise DatasetError(f"upload '{filename}' holds {len(x)} images; at least 3 are needed")
    partial.replace(target)
    return target
