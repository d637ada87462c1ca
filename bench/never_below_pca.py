"""Does the product's default search end at or above PCA? (issue 22)

For each dataset and latent size, runs ``python -m automl_core search`` as a new user
would: default strategy, default space, only ``--latent-dim`` fixed and a time limit, each
search its own process in a fresh runs folder. Reads the study back and takes its best
trial as the product ranks them (lowest validation MSE), then prints that trial's test PSNR
against PCA's with as many components (stored by the search itself as ``pca_psnr``), machine
speed first.

    python bench/never_below_pca.py [--budget 600] [--runs patches:8,patches:16,mnist-5k:16]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import machine_speed  # bench/ is the script's folder

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

RUNS = "patches:8,patches:16,patches:32,mnist-5k:16,digits:16"


def run_search(dataset: str, latent: int, budget: float, home: Path) -> dict:
    """One default search; its best trial by validation MSE and the study's counts."""
    study = f"{dataset}-{latent}"
    command = [
        sys.executable,
        "-m",
        "automl_core",
        "search",
        "--dataset",
        dataset,
        "--latent-dim",
        str(latent),
        "--study",
        study,
        "--timeout",
        str(budget),
    ]
    env = {**os.environ, "AUTOML_HOME": str(home), "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    finished = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, check=False)
    elapsed = time.perf_counter() - started
    from automl_core.storage import store
    from automl_core.storage.results import best_trial, trials_frame
    from automl_core.storage.trials import TrialRecord

    loaded = store.load_study(study, f"sqlite:///{home / 'studies.db'}")
    frame = trials_frame(loaded)
    done = frame[frame["state"] == "COMPLETE"]
    row = {
        "seconds": elapsed,
        "trials": len(done),
        "pruned": int((frame["state"] == "PRUNED").sum()),
    }
    if done.empty:
        row["error"] = finished.stderr.decode(errors="replace").strip().splitlines()[-1:]
        return row
    best = TrialRecord.from_frozen(best_trial(loaded))
    row.update(
        psnr=best.metrics["test_psnr"],
        pca=best.metrics.get("pca_psnr", float("nan")),
        linear_path=bool(best.config.get("linear_path")),
        best_epoch=best.metrics.get("best_epoch"),
        with_path=int(done["linear_path"].astype(bool).sum()) if "linear_path" in done else 0,
    )
    return row


def main() -> None:
    """Runs each search in turn and prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=600.0, help="seconds per search")
    parser.add_argument("--runs", default=RUNS, help="dataset:latent pairs, comma-separated")
    args = parser.parse_args()
    print(
        f"machine: {machine_speed():.0f} GFLOP/s (2048x2048 float32 matmul), "
        f"{len(os.sched_getaffinity(0))} of {os.cpu_count()} cores usable, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {args.budget:g} s per search",
        flush=True,
    )
    header = (
        "| dataset | latent | PCA PSNR (dB) | ours (dB) | ours - PCA (dB) | finished trials "
        "(with PCA path) | pruned | best has PCA path | best epoch |"
    )
    rows = []
    for pair in args.runs.split(","):
        dataset, latent = pair.split(":")
        with tempfile.TemporaryDirectory() as folder:
            r = run_search(dataset, int(latent), args.budget, Path(folder))
        if "error" in r:
            rows.append(f"| {dataset} | {latent} | | no finished trial: {r['error']} | | | | | |")
        else:
            rows.append(
                f"| {dataset} | {latent} | {r['pca']:.2f} | {r['psnr']:.2f} | "
                f"{r['psnr'] - r['pca']:+.2f} | {r['trials']} ({r['with_path']}) | {r['pruned']} | "
                f"{'yes' if r['linear_path'] else 'no'} | {r['best_epoch']} |"
            )
        print(rows[-1], flush=True)
    print("\n" + header)
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
