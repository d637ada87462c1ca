"""The first UMAP of a fresh server, with and without the background warm-up, and t-SNE.

Each arm is a fresh Python process, as a newly started dashboard is. It does what a visitor's
path does: the server starts (the ``warm-up`` arm starts compiling UMAP in a low-priority
background thread there, as ``dashboard.state.start_warm_up`` does after the first page),
the visitor opens the Latent space page (the trial's model is loaded, which imports
TensorFlow, and 5,000 ``mnist-5k`` images are encoded), waits ``--think`` seconds, then
asks for UMAP of the 5,000 codes. Printed: what the visitor waits for UMAP, and for t-SNE of
the same codes, per arm, with the machine's speed first.

    python bench/first_umap.py [--repeats 2] [--think 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from machine import machine_speed  # bench/ is the script's folder

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import json, sys, threading, time
t0 = time.perf_counter()
sys.path.insert(0, {root!r})
from automl_core import latent
from dashboard.state import _warm_up
warm = {warm!r}
thread = threading.Thread(target=_warm_up, daemon=True) if warm else None
if thread:
    thread.start()
import numpy as np
from automl_core import inspect
from automl_core.datasets import load_dataset
from automl_core.models import build_autoencoder
from automl_core.space import ModelConfig
data = load_dataset("mnist-5k", seed=0)
images = np.concatenate([data.x_train, data.x_val, data.x_test])
model = build_autoencoder(ModelConfig(num_conv_layers=2, filters=16, latent_dim=16),
                          data.input_shape).autoencoder
codes = inspect.encode(model, images)
page_ready = time.perf_counter() - t0
time.sleep({think!r})
asked = time.perf_counter()
latent.latent_projection(codes, "umap", latent.projection_params("umap"))
umap_wait = time.perf_counter() - asked
asked = time.perf_counter()
latent.latent_projection(codes, "tsne", latent.projection_params("tsne"))
tsne_wait = time.perf_counter() - asked
warm_done = thread is not None and not thread.is_alive()
print("RESULT " + json.dumps({{"page_ready": page_ready, "umap": umap_wait, "tsne": tsne_wait,
                              "warm_up_done_by_then": warm_done}}))
"""


def run_arm(warm: bool, think: float) -> dict:
    """One fresh process: returns the visitor's waits in seconds."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    code = CHILD.format(root=str(ROOT), warm=warm, think=think)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(lines[-1][len("RESULT ") :])


def main() -> None:
    """Alternates the two arms ``--repeats`` times and prints medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--think", type=float, default=5.0, help="seconds before asking")
    args = parser.parse_args()
    print(
        f"machine: {machine_speed():.0f} GFLOP/s (2048x2048 float32 matmul), "
        f"{len(os.sched_getaffinity(0))} of {os.cpu_count()} cores usable, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; visitor asks {args.think:g} s "
        "after the Latent space page is ready",
        flush=True,
    )
    results: dict[str, list[dict]] = {"no warm-up": [], "warm-up": []}
    for _ in range(args.repeats):
        for arm in results:
            results[arm].append(run_arm(arm == "warm-up", args.think))
            print(f"  {arm}: {results[arm][-1]}", flush=True)
    print("\n| arm | page ready (s) | first UMAP of 5,000 points (s) | t-SNE of 5,000 (s) |")
    print("|---|---:|---:|---:|")
    medians = {}
    for arm, runs in results.items():
        medians[arm] = {k: statistics.median(r[k] for r in runs) for k in ("page_ready", "umap")}
        tsne = statistics.median(r["tsne"] for r in runs)
        print(
            f"| {arm} | {medians[arm]['page_ready']:.1f} | {medians[arm]['umap']:.1f} | "
            f"{tsne:.1f} |"
        )
    ratio = medians["warm-up"]["umap"] / medians["no warm-up"]["umap"]
    print(f"\nfirst UMAP, warm-up / no warm-up: {ratio:.2f}x")
    verdict = "met" if medians["warm-up"]["umap"] < 15 else "missed"
    print(f"target: first UMAP of a fresh server under 15 s: {verdict}")


if __name__ == "__main__":
    main()
