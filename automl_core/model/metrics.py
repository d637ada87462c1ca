"""Image-quality metrics (PSNR, SSIM via ``tf.image``) and per-image reconstruction errors."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _ssim_window(height: int, width: int) -> tuple[int, float]:
    """SSIM's Gaussian window, shrunk for images smaller than the usual 11x11."""
    size = min(11, height, width)
    return size, 1.5 * size / 11


@dataclass(frozen=True)
class ReconstructionScores:
    """Per-image errors between originals and their reconstructions.

    Attributes:
        mse: Mean squared error of each image.
        psnr: Peak signal-to-noise ratio of each image in dB (max value 1).
        ssim: Structural similarity of each image, in [-1, 1].
    """

    mse: np.ndarray
    psnr: np.ndarray
    ssim: np.ndarray


def reconstruction_scores(
    originals: np.ndarray, reconstructions: np.ndarray, batch_size: int = 512
) -> ReconstructionScores:
    """Computes MSE, PSNR and SSIM for every image pair.

    Args:
        originals: Images in [0, 1], NHWC.
        reconstructions: The same images reconstructed, same shape.
        batch_size: Images per ``tf.image`` call. Defaults to 512.

    Returns:
        The per-image scores. PSNR of a perfect reconstruction is capped at 100 dB.
    """
    import tensorflow as tf

    if originals.shape != reconstructions.shape:
        raise ValueError(
            f"originals and reconstructions must have the same shape, got {originals.shape} "
            f"and {reconstructions.shape}"
        )
    size, sigma = _ssim_window(originals.shape[1], originals.shape[2])
    psnr, ssim = [], []
    for start in range(0, len(originals), batch_size):
        a = tf.convert_to_tensor(originals[start : start + batch_size], tf.float32)
        b = tf.convert_to_tensor(reconstructions[start : start + batch_size], tf.float32)
        psnr.append(tf.image.psnr(a, b, max_val=1.0).numpy())
        ssim.append(tf.image.ssim(a, b, max_val=1.0, filter_size=size, filter_sigma=sigma).numpy())
    mse = ((originals - reconstructions) ** 2).reshape(len(originals), -1).mean(axis=1)
    psnr_all = np.concatenate(psnr) if psnr else np.zeros(0)
    ssim_all = np.concatenate(ssim) if ssim else np.zeros(0)
    return ReconstructionScores(
        mse=mse.astype(np.float64),
        psnr=np.minimum(np.nan_to_num(psnr_all, posinf=100.0), 100.0).astype(np.float64),
        ssim=ssim_all.astype(np.float64),
    )
