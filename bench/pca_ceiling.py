"""How far above PCA can one autoencoder get with a long training run, at each latent size?

``bench/architectures.py`` compares searches at an equal short budget; this asks the other
question behind its PCA target: with the same data (the default split of ``--dataset``),
trained for up to ``--epochs`` epochs (early stopping with the product's patience), what
test PSNR does a strong configuration of the rich space reach against PCA with as many
components? Prints one row per latent size, machine speed first.

    python bench/pca_ceiling.py [--dataset patches] [--epochs 60] [--sizes 8,16,32,64]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from machine import machine_speed  # bench/ is the script's folder

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# The strongest configurations the architectures runs found on the patches, widened a step
# (32 filters) since here time is not the constraint.
CONFIGS = {
    "plain (2 x 32, elu)": {"num_conv_layers": 2, "filters": 32, "activation": "elu"},
    "rich (residual, batch norm, cosine, AdamW)": {
        "num_conv_layers": 2,
        "filters": 32,
        "activation": "elu",
        "residual": True,
        "batch_norm": True,
        "downsample": "stride",
        "upsample": "resize",
        "optimizer": "adamw",
        "schedule": "cosine",
    },
    # issue 22: the PCA path beside the convolutions, set to PCA before the first step
    "PCA path (plain + linear_path)": {
        "num_conv_layers": 2,
        "filters": 32,
        "activation": "elu",
        "linear_path": True,
    },
    "PCA path, AdamW 3e-4, cosine": {
        "num_conv_layers": 2,
        "filters": 32,
        "activation": "elu",
        "linear_path": True,
        "optimizer": "adamw",
        "schedule": "cosine",
        "learning_rate": 3e-4,
    },
    "PCA path, psnr loss, 1e-4": {
        "num_conv_layers": 2,
        "filters": 32,
        "activation": "elu",
        "linear_path": True,
        "loss": "psnr",
        "learning_rate": 1e-4,
    },
    # MSE-trained PCA paths given more data (augmentation) or more width: can a model the
    # product ranks by validation MSE get below PCA's MSE on these photos?
    "PCA path, augmented, 1e-4": {
        "num_conv_layers": 2,
        "filters": 32,
        "activation": "elu",
        "linear_path": True,
        "learning_rate": 1e-4,
        "augment": True,
    },
    "PCA path, augmented, 3e-5": {
        "num_conv_layers": 2,
        "filters": 32,
        "activation": "elu",
        "linear_path": True,
        "learning_rate": 3e-5,
        "augment": True,
    },
    "PCA path, 3 x 64, AdamW 1e-4": {
        "num_conv_layers": 3,
        "filters": 64,
        "activation": "elu",
        "linear_path": True,
        "optimizer": "adamw",
        "learning_rate": 1e-4,
    },
}


def main() -> None:
    """Trains each configuration at each latent size and prints PSNR against PCA's."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="patches")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--sizes", default="8,16,32,64")
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument(
        "--configs", default="", help="comma-separated words; only configurations naming one"
    )
    parser.add_argument(
        "--patience",
        type=int,
        default=0,
        help="epochs without a better validation MSE before stopping (default: the product's)",
    )
    args = parser.parse_args()
    print(
        f"machine: {machine_speed():.0f} GFLOP/s (2048x2048 float32 matmul), "
        f"{len(os.sched_getaffinity(0))} of {os.cpu_count()} cores usable, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; dataset {args.dataset}, "
        f"up to {args.epochs} epochs",
        flush=True,
    )
    from architectures import pca_psnr

    from automl_core.model import training
    from automl_core.model.datasets import load_dataset
    from automl_core.model.space import ModelConfig
    from automl_core.model.training import train_autoencoder

    if args.patience:  # a longer run than a search gives: does the start get beaten later?
        product_fit = training.fit_autoencoder

        def patient_fit(*fit_args, **fit_kwargs):
            return product_fit(*fit_args, **{**fit_kwargs, "patience": args.patience})

        training.fit_autoencoder = patient_fit

    sizes = [int(k) for k in args.sizes.split(",")]
    data = load_dataset(args.dataset, seed=0)
    pca = pca_psnr(args.dataset, sizes)
    from automl_core.model.baseline import fit_pca, pca_reconstruct

    pca_val_mse = {
        k: float(
            np.mean((pca_reconstruct(fit_pca(data.x_train, k), data.x_val) - data.x_val) ** 2)
        )
        for k in sizes
    }
    rows = []
    for k in sizes:
        for name, values in CONFIGS.items():
            words = [w for w in args.configs.split(",") if w]
            if words and not any(w in name for w in words):
                continue
            values = {"learning_rate": args.learning_rate, **values}
            config = ModelConfig(latent_dim=k, **values)
            started = time.perf_counter()
            trained = train_autoencoder(config, data, max_epochs=args.epochs, seed=0)
            m = trained.metrics
            rows.append(
                f"| {k} | {name} | {m.epochs} ({m.best_epoch}) | "
                f"{time.perf_counter() - started:.0f} | "
                f"{pca[k]:.2f} | {m.test_psnr:.2f} | {m.test_psnr - pca[k]:+.2f} | "
                f"{m.val_mse / pca_val_mse[k]:.3f} |"
            )
            print(rows[-1], flush=True)
    print(
        "\n| latent size | configuration | epochs (best) | seconds | PCA PSNR (dB) | AE PSNR (dB) | "
        "AE - PCA (dB) | AE val MSE / PCA's |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
