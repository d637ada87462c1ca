"""Rich search space against the plain one, and both against PCA, at equal wall-clock budget.

For each dataset (``mnist-5k`` and the RGB ``patches``), the default strategy searches the
plain space (1-3 layers, 8-64 filters, 4 activations, latent 8-64, learning rate 1e-4..1e-2
log) and the rich space (the plain one plus the architecture and recipe options) for the
same budget, each as its own ``python -m automl_core search`` process counted from its
start. Prints the best test PSNR and SSIM of each arm, then, for every latent size searched,
the best PSNR at that size against PCA's with as many components (equal compression ratio).

    python bench/architectures.py [--budget 180] [--datasets mnist-5k,patches]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import machine_speed  # bench/ is the script's folder

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

LATENT_SIZES = [8, 16, 32, 64]
PLAIN_SPACE = {
    "num_conv_layers": [1, 2, 3],
    "filters": [8, 16, 32, 64],
    "activation": ["relu", "elu", "sigmoid", "tanh"],
    "latent_dim": LATENT_SIZES,
    "learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
}
RICH_SPACE = {
    **PLAIN_SPACE,
    "kernel_size": [3, 5],
    "downsample": ["max-pool", "stride"],
    "upsample": ["resize", "transpose"],
    "batch_norm": [False, True],
    "residual": [False, True],
    "loss": ["mse", "mse_ssim"],
    "ssim_weight": [0.2],
    "optimizer": ["adam", "adamw"],
    "schedule": ["constant", "cosine"],
}
MAX_EPOCHS = 20


def run_arm(dataset: str, space: dict, budget: float, home: Path, study: str) -> dict:
    """One search as its own process, budget counted from its start; its trials read back."""
    space_file = home / f"{study}.json"
    space_file.write_text(json.dumps(space), encoding="utf-8")
    command = [
        sys.executable,
        "-m",
        "automl_core",
        "search",
        "--dataset",
        dataset,
        "--space",
        str(space_file),
        "--study",
        study,
        "--timeout",
        str(budget),
        "--max-epochs",
        str(MAX_EPOCHS),
        "--trials",
        "10000",
    ]
    env = {**os.environ, "AUTOML_HOME": str(home), "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    subprocess.run(command, env=env, cwd=ROOT, capture_output=True, check=False)
    elapsed = time.perf_counter() - started
    from automl_core.storage import store
    from automl_core.storage.results import trials_frame

    frame = trials_frame(store.load_study(study, f"sqlite:///{home / 'studies.db'}"))
    done = frame[frame["state"] == "COMPLETE"]
    by_size = done.groupby("latent_dim")["test_psnr"].max().to_dict() if len(done) else {}
    best = done.sort_values("test_psnr", ascending=False).head(1)
    return {
        "seconds": elapsed,
        "trials": len(done),
        "psnr": float(best["test_psnr"].iloc[0]) if len(best) else float("nan"),
        "ssim": float(best["test_ssim"].iloc[0]) if len(best) else float("nan"),
        "by_size": {int(k): float(v) for k, v in by_size.items()},
    }


def pca_psnr(dataset: str, sizes: list[int]) -> dict[int, float]:
    """Mean test PSNR of PCA with k components fit on the training split, per k."""
    from sklearn.decomposition import PCA

    from automl_core.model.datasets import load_dataset
    from automl_core.model.metrics import reconstruction_scores

    data = load_dataset(dataset, seed=0)
    train = data.x_train.reshape(len(data.x_train), -1)
    test = data.x_test.reshape(len(data.x_test), -1)
    out = {}
    for k in sizes:
        pca = PCA(n_components=k, random_state=0).fit(train)
        rebuilt = np.clip(pca.inverse_transform(pca.transform(test)), 0, 1)
        scores = reconstruction_scores(
            data.x_test, rebuilt.reshape(data.x_test.shape).astype(np.float32)
        )
        out[k] = float(scores.psnr.mean())
    return out


def main() -> None:
    """Runs every arm and prints the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=180.0, help="seconds per arm")
    parser.add_argument("--datasets", default="mnist-5k,patches")
    args = parser.parse_args()
    print(
        f"machine: {machine_speed():.0f} GFLOP/s (2048x2048 float32 matmul), "
        f"{os.cpu_count()} CPUs; budget {args.budget:.0f} s per arm, "
        f"max {MAX_EPOCHS} epochs, default strategy"
    )
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for dataset in args.datasets.split(","):
            for name, space in (("plain", PLAIN_SPACE), ("rich", RICH_SPACE)):
                home = Path(scratch) / f"{dataset}-{name}"
                home.mkdir()
                results[dataset, name] = run_arm(dataset, space, args.budget, home, name)
                print(f"  {dataset:9s} {name:5s} done: {results[dataset, name]}", flush=True)
    print("\n| dataset | space | trials | best test PSNR (dB) | its SSIM | rich - plain (dB) |")
    print("|---|---|---:|---:|---:|---:|")
    for dataset in args.datasets.split(","):
        plain, rich = results[dataset, "plain"], results[dataset, "rich"]
        for name, arm in (("plain", plain), ("rich", rich)):
            gain = f"{rich['psnr'] - plain['psnr']:+.2f}" if name == "rich" else ""
            print(
                f"| {dataset} | {name} | {arm['trials']} | {arm['psnr']:.2f} | "
                f"{arm['ssim']:.3f} | {gain} |"
            )
    print(
        "\n| dataset | latent size | compression | PCA PSNR | plain PSNR | rich PSNR | "
        "rich - PCA (dB) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for dataset in args.datasets.split(","):
        from automl_core.model.datasets import load_arrays

        values = int(np.prod(load_arrays(dataset)[0].shape[1:]))
        pca = pca_psnr(dataset, LATENT_SIZES)
        for k in LATENT_SIZES:
            plain = results[dataset, "plain"]["by_size"].get(k, float("nan"))
            rich = results[dataset, "rich"]["by_size"].get(k, float("nan"))
            print(
                f"| {dataset} | {k} | {values / k:.0f}x | {pca[k]:.2f} | {plain:.2f} | "
                f"{rich:.2f} | {rich - pca[k]:+.2f} |"
            )


if __name__ == "__main__":
    main()
