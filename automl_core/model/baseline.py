"""PCA as the honest baseline: the best a linear projection does with as many numbers.

A trial's autoencoder squeezes each image into ``latent_dim`` numbers. PCA with
``latent_dim`` components, fitted on the training split, is the linear answer to the same
question; an autoencoder that reconstructs worse than it has learned nothing a linear map
could not. The scores here are computed exactly like a trial's ``test_psnr`` /
``test_ssim`` (:func:`automl_core.model.metrics.reconstruction_scores` on the test split,
reconstructions clipped to [0, 1], the mean of per-image values) and stored in the trial's
metrics as ``pca_psnr`` / ``pca_ssim``.

Scores are kept once per dataset content (which fixes the dataset, its split seed and
fractions) and latent size: in memory for the process, and as one small JSON file per
(dataset, latent size) in a cache folder the caller names (the search uses the study's
artifact folder, so every worker and the dashboard share it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import uuid
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from automl_core.model.metrics import reconstruction_scores

if TYPE_CHECKING:
    from automl_core.model.datasets import Dataset

logger = logging.getLogger(__name__)

# the randomized solver with a fixed seed matched the exact SVD within 0.02 dB on mnist-5k
# and patches (8 to 128 components) at 3 to 60 times less time
RANDOM_STATE = 0
# above this share of min(n_samples, n_features) a randomized SVD saves nothing: use full
RANDOMIZED_BELOW = 0.8
CACHE_VERSION = 1

# (dataset fingerprint, latent size) -> scores, for this process
_MEMO: dict[tuple[str, int], PcaScores] = {}
# id(x_train) -> (a weak reference to it, its dataset's fingerprint): hashed once per array
_FINGERPRINTS: dict[int, tuple[weakref.ref, str]] = {}


@dataclass(frozen=True)
class PcaScores:
    """How well PCA reconstructs the test split.

    Attributes:
        psnr: Mean per-image PSNR over the test split, in dB.
        ssim: Mean per-image SSIM over the test split.
        n_components: The components fitted (``requested`` unless clamped).
        requested: The components asked for (the trial's ``latent_dim``).
        note: Why ``n_components`` differs from ``requested`` ('' when it does not).
    """

    psnr: float
    ssim: float
    n_components: int
    requested: int
    note: str = ""

    def to_dict(self) -> dict:
        """The scores as a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> PcaScores:
        """Scores from :meth:`to_dict`'s dict."""
        return cls(
            psnr=float(values["psnr"]),
            ssim=float(values["ssim"]),
            n_components=int(values["n_components"]),
            requested=int(values["requested"]),
            note=str(values.get("note", "")),
        )

    def metrics(self) -> dict[str, float]:
        """The trial metrics this baseline adds: ``pca_psnr`` and ``pca_ssim``."""
        return {"pca_psnr": self.psnr, "pca_ssim": self.ssim}


def clamp_components(latent_dim: int, n_train: int, n_features: int) -> tuple[int, str]:
    """The components PCA can fit for a latent size, and a note when fewer than asked.

    PCA has at most ``min(n_train, n_features)`` components.

    Args:
        latent_dim: The components asked for.
        n_train: Training images.
        n_features: Values per image (H * W * C).

    Returns:
        ``(components, note)``; the note is '' when nothing was clamped.

    Raises:
        ValueError: ``latent_dim`` is not a positive integer.
    """
    if isinstance(latent_dim, bool) or not isinstance(latent_dim, (int, np.integer)):
        raise ValueError(f"latent_dim must be a positive integer, got latent_dim={latent_dim!r}")
    if latent_dim < 1:
        raise ValueError(f"latent_dim must be a positive integer, got latent_dim={latent_dim}")
    most = min(n_train, n_features)
    if latent_dim <= most:
        return int(latent_dim), ""
    return most, (
        f"PCA fitted with {most} components instead of {latent_dim}: it has at most "
        f"min(training images, values per image) = min({n_train}, {n_features})"
    )


def _flat(images: np.ndarray) -> np.ndarray:
    return np.asarray(images, dtype=np.float32).reshape(len(images), -1)


def fit_pca(x_train: np.ndarray, k: int):
    """Fits scikit-learn's PCA with ``k`` components to images.

    The solver is ``randomized`` (seeded: the same fit every time) unless ``k`` is close to
    the largest possible, where the exact ``full`` SVD is used. ``k`` is clamped to
    ``min(n_train, n_features)``; the clamp is logged.

    Args:
        x_train: Training images, (N, H, W, C) or already flat (N, features).
        k: Components.

    Returns:
        The fitted ``sklearn.decomposition.PCA`` over flattened images (``components_``
        has shape (k, H * W * C)); reuse it to initialise a linear path of a model.

    Raises:
        ValueError: ``k`` is not a positive integer, or there are no training images.
    """
    from sklearn.decomposition import PCA

    flat = _flat(x_train)
    if len(flat) == 0:
        raise ValueError("PCA needs at least one training image, got none")
    components, note = clamp_components(k, flat.shape[0], flat.shape[1])
    if note:
        logger.info(note)
    solver = "randomized" if components < RANDOMIZED_BELOW * min(flat.shape) else "full"
    return PCA(n_components=components, svd_solver=solver, random_state=RANDOM_STATE).fit(flat)


def pca_reconstruct(pca, images: np.ndarray) -> np.ndarray:
    """Images projected onto a fitted PCA and back, clipped to [0, 1], in their own shape.

    Args:
        pca: From :func:`fit_pca`.
        images: (N, H, W, C) images of the size the PCA was fitted on.

    Returns:
        float32 reconstructions, same shape as ``images``.
    """
    images = np.asarray(images, dtype=np.float32)
    if len(images) == 0:
        return images.copy()
    rebuilt = pca.inverse_transform(pca.transform(_flat(images)))
    return np.clip(rebuilt, 0.0, 1.0).astype(np.float32).reshape(images.shape)


def dataset_fingerprint(dataset: Dataset) -> str:
    """A digest of a dataset's training and test images (so of its source and split).

    Hashed once per training array in a process.
    """
    key = id(dataset.x_train)
    known = _FINGERPRINTS.get(key)
    if known is not None and known[0]() is dataset.x_train:
        return known[1]
    digest = hashlib.sha256()
    for part in (dataset.x_train, dataset.x_test):
        array = np.ascontiguousarray(part, dtype=np.float32)
        digest.update(repr(array.shape).encode())
        digest.update(array.data)
    value = digest.hexdigest()[:24]
    try:
        _FINGERPRINTS[key] = (weakref.ref(dataset.x_train), value)
    except TypeError:  # an array-like that takes no weak reference: hash it each time
        pass
    return value


def _cache_file(cache_dir: Path, fingerprint: str, latent_dim: int) -> Path:
    return Path(cache_dir) / f"pca-{fingerprint}-k{latent_dim}.json"


def _read_cache(path: Path, fingerprint: str, latent_dim: int) -> PcaScores | None:
    """Scores stored by an earlier process, or None (missing, unreadable or another key)."""
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
        if (
            values.get("version") != CACHE_VERSION
            or values.get("dataset") != fingerprint
            or values.get("latent_dim") != latent_dim
        ):
            return None
        scores = PcaScores.from_dict(values["scores"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return scores if math.isfinite(scores.psnr) and math.isfinite(scores.ssim) else None


def _write_cache(path: Path, fingerprint: str, latent_dim: int, scores: PcaScores) -> None:
    """Stores scores whole (through a temporary name); a folder that cannot be written is
    only logged: the cache saves time, it is never needed."""
    values = {
        "version": CACHE_VERSION,
        "dataset": fingerprint,
        "latent_dim": latent_dim,
        "scores": scores.to_dict(),
    }
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps(values), encoding="utf-8")
        os.replace(partial, path)
    except OSError as exc:
        logger.info("PCA baseline not cached in %s: %s", path.parent, exc)
        try:
            partial.unlink(missing_ok=True)
        except OSError:
            pass


def pca_scores(
    dataset: Dataset, latent_dim: int, cache_dir: str | Path | None = None
) -> PcaScores:
    """PCA's test PSNR and SSIM with ``latent_dim`` components, fitted on the training split.

    Scored exactly like a trial's ``test_psnr`` / ``test_ssim``: reconstructions of the
    test split clipped to [0, 1], the mean of per-image values. Computed once per dataset
    content and latent size: kept in memory, and in ``cache_dir`` when given.

    Args:
        dataset: The split dataset a search trains on.
        latent_dim: Components (clamped to ``min(n_train, n_features)``; the result says so).
        cache_dir: A folder for the JSON cache (created when missing). Defaults to none
            (memory only).

    Returns:
        The scores.

    Raises:
        ValueError: ``latent_dim`` is not a positive integer, or a split is empty.
    """

    clamp_components(latent_dim, 1, 1)  # checks the value before anything is hashed
    latent_dim = int(latent_dim)
    if len(dataset.x_test) == 0:
        raise ValueError(f"dataset '{dataset.name}' has no test images to score PCA on")
    fingerprint = dataset_fingerprint(dataset)
    key = (fingerprint, latent_dim)
    if key in _MEMO:
        return _MEMO[key]
    path = _cache_file(Path(cache_dir), fingerprint, latent_dim) if cache_dir else None
    scores = _read_cache(path, fingerprint, latent_dim) if path is not None else None
    if scores is None:
        pca = fit_pca(dataset.x_train, latent_dim)
        rebuilt = pca_reconstruct(pca, dataset.x_test)
        per_image = reconstruction_scores(dataset.x_test, rebuilt)
        _, note = clamp_components(latent_dim, len(dataset.x_train), int(pca.n_features_in_))
        scores = PcaScores(
            psnr=float(per_image.psnr.mean()),
            ssim=float(per_image.ssim.mean()),
            n_components=int(pca.n_components_),
            requested=latent_dim,
            note=note,
        )
        if path is not None:
            _write_cache(path, fingerprint, latent_dim, scores)
    _MEMO[key] = scores
    return scores


def baseline_metrics(
    dataset: Dataset, latent_dim: int, cache_dir: str | Path | None = None
) -> dict[str, float]:
    """``{"pca_psnr", "pca_ssim"}`` for a trial's metrics, or ``{}`` when PCA failed.

    A failure is logged, never raised: the baseline must not fail the trial it describes.

    Args:
        dataset: The data the trial trained on.
        latent_dim: The trial's latent size.
        cache_dir: See :func:`pca_scores`.

    Returns:
        The two metrics, or an empty dict.
    """
    try:
        return pca_scores(dataset, latent_dim, cache_dir).metrics()
    except Exception as exc:  # noqa: BLE001 - any failure of the baseline leaves it out
        logger.warning("PCA baseline with %s components left out: %s", latent_dim, exc)
        return {}


def clear_memo() -> None:
    """Forgets the scores kept in memory (the JSON caches stay)."""
    _MEMO.clear()
    _FINGERPRINTS.clear()
